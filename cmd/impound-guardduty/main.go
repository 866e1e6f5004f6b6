package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/rs/zerolog"

	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/internal/awsconf"
	"github.com/impound-ir/impound/internal/buildinfo"
	"github.com/impound-ir/impound/vault"
)

func main() {
	log := zerolog.New(os.Stderr).With().Timestamp().Str("function", "impound-guardduty").Logger()
	ctx := log.WithContext(context.Background())
	h, err := newHandler(ctx, os.Getenv)
	if err != nil {
		// Failing the init phase makes every invocation fail loudly.
		log.Error().Err(err).Msg("cannot start")
		os.Exit(1)
	}
	lambda.StartWithOptions(h.Handle, lambda.WithContext(ctx))
}

// newHandler wires the handler from the environment: the configuration, the
// AWS configuration, the vault, the signing key and the dispatcher.
func newHandler(ctx context.Context, getenv func(string) string) (*handler, error) {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return nil, err
	}
	base, err := awsconf.Load(ctx, awsconf.Options{Region: cfg.Region})
	if err != nil {
		return nil, err
	}
	pathStyle := getenv("AWS_ENDPOINT_URL_S3") != "" || getenv("AWS_ENDPOINT_URL") != ""
	store, err := vault.Open(ctx, cfg.Vault, vault.Options{AWS: base, PathStyle: pathStyle})
	if err != nil {
		return nil, fmt.Errorf("open vault %s (IMPOUND_VAULT): %w", cfg.Vault, err)
	}
	var kc custody.KMSClient
	if strings.HasPrefix(cfg.SigningKey, custody.KMSKeyPrefix) {
		endpoint, _, err := custody.ParseKMSRef(cfg.SigningKey)
		if err != nil {
			return nil, fmt.Errorf("IMPOUND_SIGNING_KEY: %w", err)
		}
		kc = kms.NewFromConfig(base, func(o *kms.Options) {
			if endpoint != "" {
				o.BaseEndpoint = aws.String("https://" + endpoint)
			}
		})
	}
	signer, err := custody.LoadSigner(ctx, cfg.SigningKey, kc)
	if err != nil {
		return nil, fmt.Errorf("IMPOUND_SIGNING_KEY: %w", err)
	}
	h := &handler{cfg: cfg, store: store, signer: signer, accounts: &awsAccounts{base: base, cfg: cfg}}
	if cfg.Cluster != "" {
		h.dispatch = newECSDispatcher(ecs.NewFromConfig(base), cfg)
	}
	bi, err := buildinfo.Read()
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("cannot hash the function's binary for the record")
	}
	h.tool.Name, h.tool.Version, h.tool.Commit, h.tool.BinarySHA256 = "impound-guardduty", bi.Version, bi.Commit, bi.BinarySHA256
	return h, nil
}
