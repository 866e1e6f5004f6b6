package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
)

// ecsAPI is what the dispatcher calls of ECS.
type ecsAPI interface {
	RunTask(ctx context.Context, in *ecs.RunTaskInput, optFns ...func(*ecs.Options)) (*ecs.RunTaskOutput, error)
	DescribeTasks(ctx context.Context, in *ecs.DescribeTasksInput, optFns ...func(*ecs.Options)) (*ecs.DescribeTasksOutput, error)
}

// ecsDispatcher runs the acquisition as an ECS Fargate task whose container
// runs the impound CLI (its entry point) with the command as arguments.
type ecsDispatcher struct {
	api            ecsAPI
	cluster        string
	taskDefinition string
	container      string
	subnets        []string
	securityGroups []string
}

var _ dispatcher = (*ecsDispatcher)(nil)

// startedBy marks the tasks the function starts (at most 36 characters).
const startedBy = "impound-guardduty"

func newECSDispatcher(api ecsAPI, c *config) *ecsDispatcher {
	return &ecsDispatcher{api: api, cluster: c.Cluster, taskDefinition: c.TaskDefinition, container: c.Container,
		subnets: c.Subnets, securityGroups: c.SecurityGroups}
}

// Dispatch starts the task, unless r.Previous is still pending or running.
func (d *ecsDispatcher) Dispatch(ctx context.Context, r dispatchRequest) (dispatchResult, error) {
	if r.Previous != "" {
		status, err := d.status(ctx, r.Previous)
		if err != nil {
			// Not knowing, starting a second acquisition of the same
			// volumes would be worse than retrying later.
			return dispatchResult{}, err
		}
		if status != "" && status != string(ecstypes.DesiredStatusStopped) && status != "DELETED" {
			return dispatchResult{Running: true, Status: status, TaskARN: r.Previous, Cluster: d.cluster, TaskDefinition: d.taskDefinition}, nil
		}
	}
	in := &ecs.RunTaskInput{
		Cluster:        aws.String(d.cluster),
		TaskDefinition: aws.String(d.taskDefinition),
		LaunchType:     ecstypes.LaunchTypeFargate,
		Count:          aws.Int32(1),
		StartedBy:      aws.String(startedBy),
		// The same request (a retried invocation whose RunTask succeeded
		// but whose ledger entry failed) starts no second task.
		ClientToken: aws.String(clientToken(r.CaseID, r.Previous)),
		NetworkConfiguration: &ecstypes.NetworkConfiguration{AwsvpcConfiguration: &ecstypes.AwsVpcConfiguration{
			Subnets: d.subnets, SecurityGroups: d.securityGroups, AssignPublicIp: ecstypes.AssignPublicIpDisabled}},
		Overrides: &ecstypes.TaskOverride{ContainerOverrides: []ecstypes.ContainerOverride{{
			Name: aws.String(d.container), Command: r.Command}}},
	}
	out, err := d.api.RunTask(ctx, in)
	if err != nil {
		return dispatchResult{}, fmt.Errorf("ecs run-task %s in cluster %s: %w", d.taskDefinition, d.cluster, err)
	}
	if len(out.Tasks) == 0 {
		return dispatchResult{}, fmt.Errorf("ecs run-task %s in cluster %s: no task started: %s", d.taskDefinition, d.cluster, failures(out.Failures))
	}
	t := out.Tasks[0]
	res := dispatchResult{TaskARN: aws.ToString(t.TaskArn), Cluster: aws.ToString(t.ClusterArn), TaskDefinition: aws.ToString(t.TaskDefinitionArn)}
	if res.Cluster == "" {
		res.Cluster = d.cluster
	}
	if res.TaskDefinition == "" {
		res.TaskDefinition = d.taskDefinition
	}
	if res.TaskARN == "" {
		return dispatchResult{}, errors.New("ecs run-task returned a task without an ARN")
	}
	return res, nil
}

// status is the task's last status; "" when ECS no longer knows it (it
// forgets stopped tasks after a while).
func (d *ecsDispatcher) status(ctx context.Context, task string) (string, error) {
	out, err := d.api.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String(d.cluster), Tasks: []string{task}})
	if err != nil {
		return "", fmt.Errorf("ecs describe-tasks %s: %w", task, err)
	}
	for _, t := range out.Tasks {
		if aws.ToString(t.TaskArn) == task {
			return aws.ToString(t.LastStatus), nil
		}
	}
	for _, f := range out.Failures {
		if aws.ToString(f.Reason) != "MISSING" {
			return "", fmt.Errorf("ecs describe-tasks %s: %s", task, failures(out.Failures))
		}
	}
	return "", nil
}

func clientToken(caseID, previous string) string {
	h := sha256.Sum256([]byte(caseID + "\n" + previous))
	return hex.EncodeToString(h[:16])
}

func failures(fs []ecstypes.Failure) string {
	if len(fs) == 0 {
		return "no reason given"
	}
	var s []string
	for _, f := range fs {
		s = append(s, aws.ToString(f.Arn)+": "+aws.ToString(f.Reason)+" "+aws.ToString(f.Detail))
	}
	return strings.Join(s, "; ")
}
