package isolate

import (
	"context"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/smithy-go"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// denyEC2 is an EC2API whose ReplaceIamInstanceProfileAssociation and
// ModifyInstanceAttribute answer AccessDenied while the matching flag is
// set, as an IAM policy missing those actions would.
type denyEC2 struct {
	EC2API
	denyReplaceProfile bool
	denyModifyInstance bool
	denyDescribe       bool
	// denyENI, when set, denies the ModifyNetworkInterfaceAttribute calls it returns true for.
	denyENI func(*ec2.ModifyNetworkInterfaceAttributeInput) bool
	calls   map[string]int // denied calls, by operation
}

var _ EC2API = (*denyEC2)(nil)

func (d *denyEC2) ReplaceIamInstanceProfileAssociation(ctx context.Context, in *ec2.ReplaceIamInstanceProfileAssociationInput, o ...func(*ec2.Options)) (*ec2.ReplaceIamInstanceProfileAssociationOutput, error) {
	if d.denyReplaceProfile {
		d.calls["ReplaceIamInstanceProfileAssociation"]++
		return nil, accessDenied("ec2:ReplaceIamInstanceProfileAssociation")
	}
	return d.EC2API.ReplaceIamInstanceProfileAssociation(ctx, in, o...)
}

func (d *denyEC2) ModifyInstanceAttribute(ctx context.Context, in *ec2.ModifyInstanceAttributeInput, o ...func(*ec2.Options)) (*ec2.ModifyInstanceAttributeOutput, error) {
	if d.denyModifyInstance {
		d.calls["ModifyInstanceAttribute"]++
		return nil, accessDenied("ec2:ModifyInstanceAttribute")
	}
	return d.EC2API.ModifyInstanceAttribute(ctx, in, o...)
}

func (d *denyEC2) DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, o ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	if d.denyDescribe {
		d.calls["DescribeInstances"]++
		return nil, &smithy.GenericAPIError{Code: "UnauthorizedOperation", Message: "You are not authorized to perform this operation.", Fault: smithy.FaultClient}
	}
	return d.EC2API.DescribeInstances(ctx, in, o...)
}

// denyASG is an AutoScalingAPI whose EnterStandby answers AccessDenied.
type denyASG struct {
	AutoScalingAPI
	calls int
}

func (d *denyASG) EnterStandby(ctx context.Context, in *autoscaling.EnterStandbyInput, o ...func(*autoscaling.Options)) (*autoscaling.EnterStandbyOutput, error) {
	d.calls++
	return nil, accessDenied("autoscaling:EnterStandby")
}

func (d *denyEC2) ModifyNetworkInterfaceAttribute(ctx context.Context, in *ec2.ModifyNetworkInterfaceAttributeInput, o ...func(*ec2.Options)) (*ec2.ModifyNetworkInterfaceAttributeOutput, error) {
	if d.denyENI != nil && d.denyENI(in) {
		d.calls["ModifyNetworkInterfaceAttribute"]++
		return nil, accessDenied("ec2:ModifyNetworkInterfaceAttribute")
	}
	return d.EC2API.ModifyNetworkInterfaceAttribute(ctx, in, o...)
}
