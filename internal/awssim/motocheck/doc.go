// Package motocheck keeps the simulator honest: its tests run the same EC2
// and STS scenarios against internal/awssim and against moto_server through
// the real AWS SDK, and compare the answers field by field. Where moto is
// known to be wrong, the divergence is written down in the test with the
// reason, and the simulator is checked against AWS's documented behaviour
// instead.
package motocheck
