package motocheck

import (
	"context"
	"regexp"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
)

var (
	hex64Re  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	keyARNRe = regexp.MustCompile(`^arn:aws:kms:` + region + `:(\d{12}):key/[0-9a-f-]{36}$`)
)

// TestKMSGrants is the grant life cycle impound relies on to let the
// forensics account copy snapshots encrypted with a member account's key:
// create a key, grant the forensics account, list, use the grant from the
// forensics account, retire (by ID as the key's owner, by token as the
// grantee), list again.
func TestKMSGrants(t *testing.T) {
	compare(t, func(t *testing.T, tg target, n *normaliser) record {
		ctx := context.Background()
		c := kms.NewFromConfig(tg.member)
		fc := kms.NewFromConfig(tg.forensics)
		r := record{}
		key, err := c.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("impound transfer key")})
		if err != nil {
			t.Fatalf("%s: create key: %v", tg.name, err)
		}
		keyARN := aws.ToString(key.KeyMetadata.Arn)
		r["key.Arn"] = keyARNRe.MatchString(keyARN) && n.account(keyARNRe.FindStringSubmatch(keyARN)[1]) == "<member>"
		grantee := "arn:aws:iam::" + tg.forensicsID + ":root"
		ops := []kmstypes.GrantOperation{kmstypes.GrantOperationDecrypt, kmstypes.GrantOperationDescribeKey,
			kmstypes.GrantOperationCreateGrant, kmstypes.GrantOperationReEncryptFrom, kmstypes.GrantOperationRetireGrant}
		create := func(name string) *kms.CreateGrantOutput {
			g, err := c.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: aws.String(keyARN), GranteePrincipal: aws.String(grantee),
				RetiringPrincipal: aws.String(grantee), Operations: ops, Name: aws.String(name)})
			if err != nil {
				t.Fatalf("%s: create grant: %v", tg.name, err)
			}
			return g
		}
		g := create("impound-IR-1")
		r["grant.IdIs64Hex"] = hex64Re.MatchString(aws.ToString(g.GrantId))
		r["grant.HasToken"] = aws.ToString(g.GrantToken) != ""

		list := func(who string, lc *kms.Client, in *kms.ListGrantsInput) []kmstypes.GrantListEntry {
			out, err := lc.ListGrants(ctx, in)
			r["list "+who] = apiCode(err)
			if err != nil {
				return nil
			}
			return out.Grants
		}
		gs := list("by key", c, &kms.ListGrantsInput{KeyId: aws.String(keyARN)})
		r["list.count"] = len(gs)
		if len(gs) == 1 {
			e := gs[0]
			r["list.GrantId"] = aws.ToString(e.GrantId) == aws.ToString(g.GrantId)
			r["list.KeyId"] = aws.ToString(e.KeyId) == keyARN
			r["list.Name"] = aws.ToString(e.Name)
			r["list.GranteePrincipal"] = n.text(aws.ToString(e.GranteePrincipal))
			r["list.RetiringPrincipal"] = n.text(aws.ToString(e.RetiringPrincipal))
			var got []string
			for _, o := range e.Operations {
				got = append(got, string(o))
			}
			slices.Sort(got)
			r["list.Operations"] = got
			r["list.IssuingAccount"] = n.text(aws.ToString(e.IssuingAccount))
			r["list.CreationDateSet"] = e.CreationDate != nil && !e.CreationDate.IsZero()
		}
		r["list by grant ID count"] = len(list("by grant ID", c, &kms.ListGrantsInput{KeyId: aws.String(keyARN), GrantId: g.GrantId}))
		r["list by other grant ID count"] = len(list("by other grant ID", c, &kms.ListGrantsInput{KeyId: aws.String(keyARN),
			GrantId: aws.String("0000000000000000000000000000000000000000000000000000000000000000")}))

		// The grant lets the forensics account use the member's key.
		_, err = fc.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(keyARN)})
		r["forensics describe key through grant"] = apiCode(err)

		// The key's owner retires the grant by its ID; a second retire finds nothing.
		_, err = c.RetireGrant(ctx, &kms.RetireGrantInput{KeyId: aws.String(keyARN), GrantId: g.GrantId})
		r["owner retire by ID"] = apiCode(err)
		r["after retire count"] = len(list("after retire", c, &kms.ListGrantsInput{KeyId: aws.String(keyARN)}))
		_, err = c.RetireGrant(ctx, &kms.RetireGrantInput{KeyId: aws.String(keyARN), GrantId: g.GrantId})
		r["retire again"] = apiCode(err)

		// The grantee retires a second grant with its token, from its own account.
		g2 := create("impound-IR-2")
		r["second grant count"] = len(list("second grant", c, &kms.ListGrantsInput{KeyId: aws.String(keyARN)}))
		_, err = fc.RetireGrant(ctx, &kms.RetireGrantInput{GrantToken: g2.GrantToken})
		r["grantee retire by token"] = apiCode(err)
		r["after grantee retire count"] = len(list("after grantee retire", c, &kms.ListGrantsInput{KeyId: aws.String(keyARN)}))

		// Errors.
		g3 := create("impound-IR-3")
		_, err = c.RevokeGrant(ctx, &kms.RevokeGrantInput{KeyId: aws.String(keyARN), GrantId: g3.GrantId})
		r["revoke"] = apiCode(err)
		_, err = c.RevokeGrant(ctx, &kms.RevokeGrantInput{KeyId: aws.String(keyARN), GrantId: g3.GrantId})
		r["revoke again"] = apiCode(err)
		_, err = c.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: aws.String(keyARN), GranteePrincipal: aws.String(grantee),
			Operations: []kmstypes.GrantOperation{"Fly"}})
		r["create grant bad operation"] = apiCode(err)
		_, err = c.ListGrants(ctx, &kms.ListGrantsInput{KeyId: aws.String("arn:aws:kms:" + region + ":" + tg.memberID + ":key/00000000-0000-0000-0000-000000000000")})
		r["list grants unknown key"] = apiCode(err)
		return r
	}, map[string]divergence{
		// moto keeps each account's keys in the account's own backend: another
		// account cannot reach a key by its ARN, grant or not. AWS lets a grantee
		// in another account use the key for the granted operations.
		"forensics describe key through grant": {reason: "moto does not resolve other accounts' keys", want: ""},
		// For the same reason moto's RetireGrant by token looks only at the
		// caller's own keys, finds nothing and says nothing: the grant stays.
		"after grantee retire count": {reason: "moto's RetireGrant by token ignores other accounts' keys", want: 0},
		// moto's grant IDs are 32 hex digits; AWS's are 64.
		"grant.IdIs64Hex": {reason: "moto's grant IDs are 32 hex digits", want: true},
		// moto lists a grant's KeyId as the bare key ID; AWS gives the key ARN.
		"list.KeyId": {reason: "moto lists the bare key ID", want: true},
		// moto omits IssuingAccount and CreationDate from ListGrants.
		"list.IssuingAccount":  {reason: "moto omits IssuingAccount", want: "arn:aws:iam::<member>:root"},
		"list.CreationDateSet": {reason: "moto omits CreationDate", want: true},
		// moto answers RetireGrant of a grant already retired with success;
		// AWS says the grant is not found.
		"retire again": {reason: "moto's RetireGrant by ID succeeds for an unknown grant", want: "NotFoundException"},
		// moto fails ListGrants on a key that does not exist with an HTTP 500
		// (an unhandled exception); AWS answers NotFoundException.
		"list grants unknown key": {reason: "moto crashes on an unknown key", want: "NotFoundException"},
		// moto does not validate grant operations.
		"create grant bad operation": {reason: "moto accepts any grant operation", want: "ValidationException"},
	})
}
