package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/impound-ir/impound/internal/testenv"
)

func motoConfig(t *testing.T) (aws.Config, string) {
	ep := testenv.Server(t, "IMPOUND_TEST_MOTO_ENDPOINT")
	return aws.Config{Region: "us-east-1", BaseEndpoint: aws.String(ep),
		Credentials: credentials.NewStaticCredentialsProvider("testing", "testing", ""),
		Retryer:     func() aws.Retryer { return retry.NewStandard() }}, ep
}

// motoAPI posts to moto's own API.
func motoAPI(t *testing.T, ep, path string, body any) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(ep+"/moto-api/"+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("moto-api %s: %s", path, resp.Status)
	}
}

// TestECSDispatcherMoto runs the dispatcher against moto_server's ECS.
func TestECSDispatcherMoto(t *testing.T) {
	cfg, ep := motoConfig(t)
	ctx := context.Background()
	// Divergence: moto advances a task's status on every read (RUNNING,
	// DEACTIVATING, STOPPING, DEPROVISIONING, STOPPED) where ECS keeps it
	// RUNNING until the container exits. The test makes moto keep it too,
	// and StopTask stops it as ECS does.
	motoAPI(t, ep, "state-manager/set-transition", map[string]any{"model_name": "ecs::task",
		"transition": map[string]any{"progression": "manual", "times": 1 << 30}})
	t.Cleanup(func() { motoAPI(t, ep, "state-manager/unset-transition", map[string]any{"model_name": "ecs::task"}) })
	api := ecs.NewFromConfig(cfg, func(o *ecs.Options) { o.HTTPClient = &http.Client{Transport: motoECSFix{}} })
	e2 := ec2.NewFromConfig(cfg)
	// Unique to the test: moto_server is shared by the whole run.
	name := fmt.Sprintf("impound-test-%d", time.Now().UnixNano())
	if _, err := api.CreateCluster(ctx, &ecs.CreateClusterInput{ClusterName: aws.String(name)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = api.DeleteCluster(context.Background(), &ecs.DeleteClusterInput{Cluster: aws.String(name)})
	})
	td, err := api.RegisterTaskDefinition(ctx, &ecs.RegisterTaskDefinitionInput{
		Family: aws.String(name), NetworkMode: ecstypes.NetworkModeAwsvpc, RequiresCompatibilities: []ecstypes.Compatibility{ecstypes.CompatibilityFargate},
		Cpu: aws.String("1024"), Memory: aws.String("4096"),
		// Divergence: moto's RunTask fails (500) unless every container
		// names its memory, which Fargate does not require.
		ContainerDefinitions: []ecstypes.ContainerDefinition{{Name: aws.String("impound"), Image: aws.String("ghcr.io/impound-ir/impound:test"),
			MemoryReservation: aws.Int32(4096),
			EntryPoint:        []string{"impound"}, Essential: aws.Bool(true),
			Environment: []ecstypes.KeyValuePair{{Name: aws.String("IMPOUND_SIGNING_KEY"), Value: aws.String("awskms:///arn:aws:kms:us-east-1:123456789012:key/test")}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	// awsvpc tasks get an interface in a real subnet.
	vpc, err := e2.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.42.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	// Divergence: moto's RunTask fails (500) in a VPC without DNS
	// hostnames; the acquisition VPC has them (its endpoints need them).
	if _, err := e2.ModifyVpcAttribute(ctx, &ec2.ModifyVpcAttributeInput{VpcId: vpc.Vpc.VpcId, EnableDnsHostnames: &ec2types.AttributeBooleanValue{Value: aws.Bool(true)}}); err != nil {
		t.Fatal(err)
	}
	sub, err := e2.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: vpc.Vpc.VpcId, CidrBlock: aws.String("10.42.1.0/24"), AvailabilityZone: aws.String("us-east-1a")})
	if err != nil {
		t.Fatal(err)
	}
	sg, err := e2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(name), Description: aws.String("impound acquisition"), VpcId: vpc.Vpc.VpcId})
	if err != nil {
		t.Fatal(err)
	}
	subnet, group := aws.ToString(sub.Subnet.SubnetId), aws.ToString(sg.GroupId)

	c := &config{Cluster: name, TaskDefinition: aws.ToString(td.TaskDefinition.TaskDefinitionArn), Container: "impound",
		Subnets: []string{subnet}, SecurityGroups: []string{group}}
	d := newECSDispatcher(api, c)
	command := []string{"respond", "--case", "gd-i-0123456789abcdef0", "--instance", "i-0123456789abcdef0", "--vault", "s3://evidence",
		"--no-isolate", "--region", "us-east-1", "--role-arn", "arn:aws:iam::111111111111:role/impound responder's"}
	res, err := d.Dispatch(ctx, dispatchRequest{CaseID: "gd-i-0123456789abcdef0", InstanceID: "i-0123456789abcdef0", Command: command})
	if err != nil {
		t.Fatal(err)
	}
	if res.Running || !strings.HasPrefix(res.TaskARN, "arn:aws:ecs:us-east-1:") || !strings.HasSuffix(res.Cluster, "/"+name) ||
		res.TaskDefinition != c.TaskDefinition {
		t.Fatalf("dispatched %+v", res)
	}

	out, err := api.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String(name), Tasks: []string{res.TaskARN}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Tasks) != 1 {
		t.Fatalf("describe-tasks: %d tasks, failures %+v", len(out.Tasks), out.Failures)
	}
	task := out.Tasks[0]
	if task.Overrides == nil || len(task.Overrides.ContainerOverrides) != 1 {
		t.Fatalf("task overrides %+v", task.Overrides)
	}
	co := task.Overrides.ContainerOverrides[0]
	if aws.ToString(co.Name) != "impound" || !reflect.DeepEqual(co.Command, command) {
		t.Fatalf("container override %s %q, want impound %q", aws.ToString(co.Name), co.Command, command)
	}
	if task.LaunchType != ecstypes.LaunchTypeFargate || aws.ToString(task.StartedBy) != startedBy {
		t.Errorf("launch type %q, started by %q", task.LaunchType, aws.ToString(task.StartedBy))
	}
	// The network configuration: DescribeTasks shows it as the task's
	// elastic network interface, in the subnet and security group given.
	var gotSubnet, eni string
	for _, a := range task.Attachments {
		if aws.ToString(a.Type) != "ElasticNetworkInterface" {
			continue
		}
		for _, kv := range a.Details {
			switch aws.ToString(kv.Name) {
			case "subnetId":
				gotSubnet = aws.ToString(kv.Value)
			case "networkInterfaceId":
				eni = aws.ToString(kv.Value)
			}
		}
	}
	if gotSubnet != subnet || eni == "" {
		t.Fatalf("task attachments %+v: want an interface in subnet %s", task.Attachments, subnet)
	}
	nis, err := e2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{eni}})
	if err != nil {
		t.Fatal(err)
	}
	if len(nis.NetworkInterfaces) != 1 || len(nis.NetworkInterfaces[0].Groups) != 1 || aws.ToString(nis.NetworkInterfaces[0].Groups[0].GroupId) != group {
		t.Errorf("the task's interface %s: %+v, want security group %s", eni, nis.NetworkInterfaces, group)
	}

	// While the task runs, another dispatch for the case starts nothing.
	status := aws.ToString(task.LastStatus)
	again, err := d.Dispatch(ctx, dispatchRequest{CaseID: "gd-i-0123456789abcdef0", Command: command, Previous: res.TaskARN})
	if err != nil {
		t.Fatal(err)
	}
	if !again.Running || again.Status != status || status != "RUNNING" || again.TaskARN != res.TaskARN {
		t.Fatalf("dispatch while %s: %+v", status, again)
	}
	if n := countTasks(t, api, name); n != 1 {
		t.Fatalf("%d tasks in the cluster, want 1", n)
	}

	// Once it stopped, a dispatch starts a new one.
	if _, err := api.StopTask(ctx, &ecs.StopTaskInput{Cluster: aws.String(name), Task: aws.String(res.TaskARN), Reason: aws.String("test")}); err != nil {
		t.Fatal(err)
	}
	next, err := d.Dispatch(ctx, dispatchRequest{CaseID: "gd-i-0123456789abcdef0", Command: command, Previous: res.TaskARN})
	if err != nil {
		t.Fatal(err)
	}
	if next.Running || next.TaskARN == "" || next.TaskARN == res.TaskARN {
		t.Fatalf("dispatch after stop: %+v", next)
	}

	if n := countTasks(t, api, name); n != 1 {
		t.Fatalf("%d tasks running in the cluster after the restart, want 1", n)
	}

	// A task ECS no longer knows counts as stopped. Divergence: ECS
	// answers it with a failure, reason MISSING; moto with nothing at all.
	gone := res.TaskARN[:strings.LastIndex(res.TaskARN, "/")+1] + "00000000000000000000000000000000"
	if st, err := d.status(ctx, gone); st != "" || err != nil {
		t.Fatalf("unknown task: status %q, %v", st, err)
	}
}

// motoECSFix rewrites moto's ECS answers where they diverge from ECS's so
// far that the SDK cannot read them. Divergence: moto sends a task's
// containers' cpu and memory as JSON numbers, ECS as strings.
type motoECSFix struct{}

func (motoECSFix) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if json.Unmarshal(b, &doc) == nil {
		tasks, _ := doc["tasks"].([]any)
		if t, ok := doc["task"]; ok {
			tasks = append(tasks, t)
		}
		if len(tasks) > 0 {
			for _, t := range tasks {
				cs, _ := t.(map[string]any)["containers"].([]any)
				for _, c := range cs {
					c := c.(map[string]any)
					for _, k := range []string{"cpu", "memory"} {
						if n, ok := c[k].(float64); ok {
							c[k] = strconv.FormatFloat(n, 'f', -1, 64)
						}
					}
				}
			}
			if nb, err := json.Marshal(doc); err == nil {
				b = nb
			}
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
	return resp, nil
}

func countTasks(t *testing.T, api *ecs.Client, cluster string) int {
	t.Helper()
	n := 0
	for _, st := range []ecstypes.DesiredStatus{ecstypes.DesiredStatusRunning, ecstypes.DesiredStatusPending} {
		out, err := api.ListTasks(context.Background(), &ecs.ListTasksInput{Cluster: aws.String(cluster), DesiredStatus: st})
		if err != nil {
			t.Fatal(err)
		}
		n += len(out.TaskArns)
	}
	return n
}

// fakeECS answers RunTask and DescribeTasks from memory.
type fakeECS struct {
	runs     []*ecs.RunTaskInput
	tasks    map[string]string // last status by ARN
	failures []ecstypes.Failure
	runErr   error
}

var _ ecsAPI = (*fakeECS)(nil)

func (f *fakeECS) RunTask(ctx context.Context, in *ecs.RunTaskInput, _ ...func(*ecs.Options)) (*ecs.RunTaskOutput, error) {
	f.runs = append(f.runs, in)
	if f.runErr != nil {
		return nil, f.runErr
	}
	if len(f.failures) > 0 {
		return &ecs.RunTaskOutput{Failures: f.failures}, nil
	}
	arn := fmt.Sprintf("arn:aws:ecs:us-east-1:123456789012:task/c/%032d", len(f.runs))
	f.tasks[arn] = "PROVISIONING"
	return &ecs.RunTaskOutput{Tasks: []ecstypes.Task{{TaskArn: aws.String(arn), LastStatus: aws.String("PROVISIONING")}}}, nil
}

func (f *fakeECS) DescribeTasks(ctx context.Context, in *ecs.DescribeTasksInput, _ ...func(*ecs.Options)) (*ecs.DescribeTasksOutput, error) {
	out := &ecs.DescribeTasksOutput{}
	for _, arn := range in.Tasks {
		if s, ok := f.tasks[arn]; ok {
			out.Tasks = append(out.Tasks, ecstypes.Task{TaskArn: aws.String(arn), LastStatus: aws.String(s)})
		} else {
			out.Failures = append(out.Failures, ecstypes.Failure{Arn: aws.String(arn), Reason: aws.String("MISSING")})
		}
	}
	return out, nil
}

func TestECSDispatcherStatuses(t *testing.T) {
	ctx := context.Background()
	f := &fakeECS{tasks: map[string]string{}}
	d := newECSDispatcher(f, &config{Cluster: "c", TaskDefinition: "impound-acquire:3", Container: "impound",
		Subnets: []string{"subnet-1", "subnet-2"}, SecurityGroups: []string{"sg-1"}})
	first, err := d.Dispatch(ctx, dispatchRequest{CaseID: "gd-i-1", Command: []string{"respond"}})
	if err != nil {
		t.Fatal(err)
	}
	in := f.runs[0]
	nc := in.NetworkConfiguration.AwsvpcConfiguration
	if in.LaunchType != ecstypes.LaunchTypeFargate || aws.ToString(in.TaskDefinition) != "impound-acquire:3" ||
		!reflect.DeepEqual(nc.Subnets, []string{"subnet-1", "subnet-2"}) || !reflect.DeepEqual(nc.SecurityGroups, []string{"sg-1"}) ||
		nc.AssignPublicIp != ecstypes.AssignPublicIpDisabled || aws.ToString(in.ClientToken) == "" {
		t.Fatalf("run-task input %+v", in)
	}
	// Every status but STOPPED (and DELETED) keeps the task: no second one.
	statuses := []string{"PROVISIONING", "PENDING", "ACTIVATING", "RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING"}
	sort.Strings(statuses)
	for _, s := range statuses {
		f.tasks[first.TaskARN] = s
		r, err := d.Dispatch(ctx, dispatchRequest{CaseID: "gd-i-1", Command: []string{"respond"}, Previous: first.TaskARN})
		if err != nil || !r.Running || r.Status != s {
			t.Fatalf("previous %s: %+v, %v", s, r, err)
		}
	}
	if len(f.runs) != 1 {
		t.Fatalf("%d run-task calls while the task ran", len(f.runs))
	}
	for i, s := range []string{"STOPPED", "DELETED", ""} {
		prev := first.TaskARN
		if s == "" {
			prev = "arn:aws:ecs:us-east-1:123456789012:task/c/forgotten" // MISSING
		} else {
			f.tasks[prev] = s
		}
		r, err := d.Dispatch(ctx, dispatchRequest{CaseID: "gd-i-1", Command: []string{"respond"}, Previous: prev})
		if err != nil || r.Running || r.TaskARN == "" || len(f.runs) != 2+i {
			t.Fatalf("previous %q: %+v, %v (%d runs)", s, r, err, len(f.runs))
		}
	}
	// Each previous task gives another idempotency token; the same one the same.
	if a, b := clientToken("gd-i-1", ""), clientToken("gd-i-1", first.TaskARN); a == b || a != clientToken("gd-i-1", "") || len(a) > 64 {
		t.Errorf("client tokens %q %q", a, b)
	}

	// RunTask that starts nothing says why.
	f.failures = []ecstypes.Failure{{Arn: aws.String("arn:aws:ecs:us-east-1:123456789012:container-instance/x"), Reason: aws.String("RESOURCE:MEMORY")}}
	if _, err := d.Dispatch(ctx, dispatchRequest{CaseID: "gd-i-2"}); err == nil || !strings.Contains(err.Error(), "RESOURCE:MEMORY") {
		t.Fatalf("failures: %v", err)
	}
	f.failures, f.runErr = nil, errors.New("AccessDeniedException")
	if _, err := d.Dispatch(ctx, dispatchRequest{CaseID: "gd-i-2"}); err == nil || !strings.Contains(err.Error(), "AccessDeniedException") {
		t.Fatalf("run-task error: %v", err)
	}
}
