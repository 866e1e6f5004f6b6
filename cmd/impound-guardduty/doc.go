// Command impound-guardduty is the AWS Lambda function that starts a
// response when GuardDuty raises a finding about an EC2 instance.
//
// It is built for the provided.al2023 custom runtime: the binary is named
// bootstrap in the deployment package, for example
//
//	GOOS=linux GOARCH=arm64 CGO_ENABLED=0 go build -tags lambda.norpc -o bootstrap ./cmd/impound-guardduty
//	zip impound-guardduty.zip bootstrap
//
// An EventBridge rule with the pattern
//
//	{"source": ["aws.guardduty"], "detail-type": ["GuardDuty Finding"]}
//
// invokes it (asynchronously) with each finding event.
//
// # What it does with an event
//
//  1. It ignores, logging why and returning success so EventBridge does not
//     retry, any finding that is not actionable: sample findings, findings
//     not about an EC2 instance, below IMPOUND_MIN_SEVERITY, not of a type
//     in IMPOUND_FINDING_TYPES, or from another Region than the function's.
//     Nothing is written to the vault for them.
//  2. It opens or resumes one case per instance, not per event (GuardDuty
//     delivers a finding again as it updates): gd-<instance ID>, or
//     gd-<instance ID>-2, -3, … once the earlier case is closed. A new case
//     records trigger guardduty:<finding ID> and operator guardduty; every
//     event records a guardduty.finding action (finding ID, type, severity,
//     count) in the ledger; the finding itself is stored as evidence once.
//  3. It runs the short stages: collect (the control-plane evidence and the
//     finding) and, when IMPOUND_ISOLATE is true, isolate, under a deadline
//     that leaves a margin before the Lambda's own.
//  4. It hands the long work (snapshot, acquire, verify, report, close) to an
//     ECS Fargate task running `impound respond --case ID --no-isolate …` for
//     the same case (the command overrides the container's command: the
//     image's entry point must be the impound binary), and records the
//     dispatch (ecs.run-task) in the ledger,
//     failed or not. No second task is started while the case's recorded
//     task is still pending or running; one is started again when it has
//     stopped and the case is still open. Without IMPOUND_ACQUIRE_CLUSTER,
//     the command a responder should run instead is logged and recorded as
//     a note.
//
// # Failures
//
// A failed stage is recorded in the ledger, logged at error level, and makes
// the invocation return an error, so Lambda's asynchronous retries run it
// again (every stage is idempotent: a retry continues the case). The
// acquisition is dispatched even when collect or isolate failed: the
// snapshots do not depend on them, and evidence should be frozen as early as
// possible. A failed dispatch is recorded as failed and returned as an
// error. Only a failure to open the case (no ledger to record in) stops
// everything before any AWS change.
//
// An instance still isolated by an earlier, closed case of the function
// (never released) is not isolated again by the next case, which records
// so: isolating it again would overwrite the state a release restores. An
// instance isolated by a case opened by hand (impound respond) makes the
// isolate stage fail, loudly, until a responder decides.
//
// Appending to one case from several invocations at once is safe (the
// ledger takes the next free entry), but deploy the function with a
// reserved concurrency of 1 so two findings about one instance do not race
// to start two acquisition tasks.
//
// # Environment
//
// These names are a contract with the deployment template:
//
//	IMPOUND_VAULT                    required: s3://bucket[/prefix], the vault (Object Lock bucket)
//	IMPOUND_SIGNING_KEY              required: awskms:///KEY-ARN (file:PATH in tests)
//	IMPOUND_MEMBER_ROLE_NAME         role assumed in the finding's account,
//	                                 arn:<partition>:iam::<detail.accountId>:role/<name>;
//	                                 empty, or the finding is in the function's own account:
//	                                 the function's own credentials
//	IMPOUND_FORENSICS_ROLE_ARN       role assumed in the forensics account (default: own credentials)
//	IMPOUND_EXTERNAL_ID              external ID the roles require
//	IMPOUND_MIN_SEVERITY             least severity acted on, 0 to 10 (default 7, GuardDuty's High)
//	IMPOUND_FINDING_TYPES            comma-separated finding-type prefixes acted on (default: all)
//	IMPOUND_ISOLATE                  isolate the instance (default true)
//	IMPOUND_ALLOW_SSM                isolation keeps HTTPS to the VPC's SSM and S3 endpoints (default false)
//	IMPOUND_ALLOW_DEFAULT_VPC        isolate an instance in a default VPC too (default false: refused, recorded, loud)
//	IMPOUND_FORENSICS_KMS_KEY        KMS key encrypting the forensics account's snapshot copies
//	IMPOUND_MEMBER_KMS_KEY           member-account KMS key re-encrypting aws/ebs snapshots
//	IMPOUND_RETENTION_DAYS           Object Lock retention of evidence, in days (default: the bucket's)
//	IMPOUND_RETENTION_MODE           compliance or governance (default compliance)
//	IMPOUND_ACQUIRE_CLUSTER          ECS cluster of the acquisition task; empty: log the command instead
//	IMPOUND_ACQUIRE_TASK_DEFINITION  its task definition (family[:revision] or ARN); required with a cluster
//	IMPOUND_ACQUIRE_SUBNETS          comma-separated subnets of the task (awsvpc); required with a cluster
//	IMPOUND_ACQUIRE_SECURITY_GROUPS  comma-separated security groups of the task
//	IMPOUND_ACQUIRE_CONTAINER        the container running impound in the task (default impound)
//
// The Region is the Lambda's own (AWS_REGION). The acquisition task gets
// its signing key through its own environment (IMPOUND_SIGNING_KEY, set in
// its task definition), never on its command line.
//
// Logs are zerolog JSON lines on stderr, each naming the case, the instance
// and the finding.
package main
