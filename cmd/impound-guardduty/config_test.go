package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/impound-ir/impound/respond"
	"github.com/impound-ir/impound/vault"
)

func TestLoadConfig(t *testing.T) {
	base := map[string]string{
		"AWS_REGION":          "eu-west-1",
		"IMPOUND_VAULT":       "s3://acme-forensics-eu-west-1/impound",
		"IMPOUND_SIGNING_KEY": "awskms:///arn:aws:kms:eu-west-1:222222222222:key/1234abcd-12ab-34cd-56ef-1234567890ab",
	}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name    string
		env     map[string]string
		check   func(t *testing.T, c *config)
		wantErr string
	}{
		{"defaults", base, func(t *testing.T, c *config) {
			want := &config{Region: "eu-west-1", Vault: base["IMPOUND_VAULT"], SigningKey: base["IMPOUND_SIGNING_KEY"],
				MinSeverity: 7, Isolate: true, RetentionMode: vault.ModeCompliance, Container: "impound"}
			if !reflect.DeepEqual(c, want) {
				t.Fatalf("got %+v\nwant %+v", c, want)
			}
			p := c.policy()
			if p.MinSeverity != respond.DefaultMinSeverity || p.Region != "eu-west-1" || p.TypePrefixes != nil {
				t.Errorf("policy %+v", p)
			}
		}, ""},
		{"everything", with(
			"IMPOUND_MEMBER_ROLE_NAME", "impound-responder", "IMPOUND_FORENSICS_ROLE_ARN", "arn:aws:iam::222222222222:role/impound-forensics",
			"IMPOUND_EXTERNAL_ID", "x-123", "IMPOUND_MIN_SEVERITY", "5.5", "IMPOUND_FINDING_TYPES", " Backdoor:EC2/, ,CryptoCurrency:EC2/ ",
			"IMPOUND_ISOLATE", "false", "IMPOUND_ALLOW_SSM", "true", "IMPOUND_ALLOW_DEFAULT_VPC", "true", "IMPOUND_FORENSICS_KMS_KEY", "arn:aws:kms:eu-west-1:222222222222:key/f",
			"IMPOUND_MEMBER_KMS_KEY", "arn:aws:kms:eu-west-1:111111111111:key/m", "IMPOUND_RETENTION_DAYS", "365", "IMPOUND_RETENTION_MODE", "Governance",
			"IMPOUND_ACQUIRE_CLUSTER", "impound", "IMPOUND_ACQUIRE_TASK_DEFINITION", "impound-acquire:3",
			"IMPOUND_ACQUIRE_SUBNETS", "subnet-1,subnet-2", "IMPOUND_ACQUIRE_SECURITY_GROUPS", "sg-1", "IMPOUND_ACQUIRE_CONTAINER", "acquire"),
			func(t *testing.T, c *config) {
				want := &config{Region: "eu-west-1", Vault: base["IMPOUND_VAULT"], SigningKey: base["IMPOUND_SIGNING_KEY"],
					MemberRoleName: "impound-responder", ForensicsRoleARN: "arn:aws:iam::222222222222:role/impound-forensics", ExternalID: "x-123",
					MinSeverity: 5.5, FindingTypes: []string{"Backdoor:EC2/", "CryptoCurrency:EC2/"}, Isolate: false, AllowSSM: true, AllowDefaultVPC: true,
					ForensicsKMSKey: "arn:aws:kms:eu-west-1:222222222222:key/f", MemberKMSKey: "arn:aws:kms:eu-west-1:111111111111:key/m",
					RetentionDays: 365, RetentionMode: vault.ModeGovernance, Cluster: "impound", TaskDefinition: "impound-acquire:3",
					Subnets: []string{"subnet-1", "subnet-2"}, SecurityGroups: []string{"sg-1"}, Container: "acquire"}
				if !reflect.DeepEqual(c, want) {
					t.Fatalf("got %+v\nwant %+v", c, want)
				}
			}, ""},
		{"file key", with("IMPOUND_SIGNING_KEY", "file:/keys/ir.key"), nil, ""},
		{"no region", with("AWS_REGION", ""), nil, "AWS_REGION is not set"},
		{"no vault", with("IMPOUND_VAULT", ""), nil, "IMPOUND_VAULT is required"},
		{"vault not s3", with("IMPOUND_VAULT", "/var/evidence"), nil, `IMPOUND_VAULT "/var/evidence" is not an S3 vault`},
		{"vault no bucket", with("IMPOUND_VAULT", "s3://"), nil, "names no bucket"},
		{"no key", with("IMPOUND_SIGNING_KEY", ""), nil, "IMPOUND_SIGNING_KEY is required"},
		{"bad kms key", with("IMPOUND_SIGNING_KEY", "awskms://"), nil, "IMPOUND_SIGNING_KEY"},
		{"bare path key", with("IMPOUND_SIGNING_KEY", "/keys/ir.key"), nil, `IMPOUND_SIGNING_KEY "/keys/ir.key": set it to awskms:///KEY-ARN`},
		{"role ARN for name", with("IMPOUND_MEMBER_ROLE_NAME", "arn:aws:iam::111111111111:role/r"), nil, "IMPOUND_MEMBER_ROLE_NAME"},
		{"severity not number", with("IMPOUND_MIN_SEVERITY", "high"), nil, `IMPOUND_MIN_SEVERITY "high": set a number`},
		{"severity out of range", with("IMPOUND_MIN_SEVERITY", "11"), nil, "IMPOUND_MIN_SEVERITY 11"},
		{"isolate not bool", with("IMPOUND_ISOLATE", "yes please"), nil, `IMPOUND_ISOLATE "yes please": set true or false`},
		{"allow ssm not bool", with("IMPOUND_ALLOW_SSM", "maybe"), nil, "IMPOUND_ALLOW_SSM"},
		{"allow default vpc not bool", with("IMPOUND_ALLOW_DEFAULT_VPC", "sometimes"), nil, "IMPOUND_ALLOW_DEFAULT_VPC"},
		{"retention days", with("IMPOUND_RETENTION_DAYS", "-1"), nil, "IMPOUND_RETENTION_DAYS"},
		{"retention mode", with("IMPOUND_RETENTION_MODE", "forever"), nil, "IMPOUND_RETENTION_MODE"},
		{"cluster without task definition", with("IMPOUND_ACQUIRE_CLUSTER", "impound", "IMPOUND_ACQUIRE_SUBNETS", "subnet-1"), nil, "IMPOUND_ACQUIRE_TASK_DEFINITION is required"},
		{"cluster without subnets", with("IMPOUND_ACQUIRE_CLUSTER", "impound", "IMPOUND_ACQUIRE_TASK_DEFINITION", "t"), nil, "IMPOUND_ACQUIRE_SUBNETS is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadConfig(func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

func TestMemberRoleARN(t *testing.T) {
	tests := []struct {
		name, role, partition, account, own, want string
	}{
		{"other account", "impound-responder", "aws", "111111111111", "222222222222", "arn:aws:iam::111111111111:role/impound-responder"},
		{"with path", "/ir/impound-responder", "aws", "111111111111", "222222222222", "arn:aws:iam::111111111111:role/ir/impound-responder"},
		{"gov cloud", "impound-responder", "aws-us-gov", "111111111111", "222222222222", "arn:aws-us-gov:iam::111111111111:role/impound-responder"},
		{"no partition", "impound-responder", "", "111111111111", "222222222222", "arn:aws:iam::111111111111:role/impound-responder"},
		{"own account", "impound-responder", "aws", "222222222222", "222222222222", ""},
		{"no role", "", "aws", "111111111111", "222222222222", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &config{MemberRoleName: tt.role}
			if got := c.memberRoleARN(tt.partition, tt.account, tt.own); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestShellJoin(t *testing.T) {
	got := shellJoin([]string{"respond", "--case", "gd-i-1", "--role-arn", "arn:aws:iam::1:role/it's", "", "a b"})
	want := `respond --case gd-i-1 --role-arn 'arn:aws:iam::1:role/it'\''s' '' 'a b'`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}
