package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/user"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/impound-ir/impound/internal/awsconf"
)

// globalOptions are the flags every command takes, after the AWS CLI's conventions.
type globalOptions struct {
	Profile     string
	Region      string
	EndpointURL string
	Output      string // "text" or "json"
	LogLevel    string
	LogFormat   string // "console" or "json"
	NoProgress  bool

	Stdout, Stderr io.Writer

	logger *zerolog.Logger
}

func (g *globalOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&g.Profile, "profile", "", "AWS shared-config profile to use")
	f.StringVar(&g.Region, "region", "", "AWS Region (default: from AWS_REGION or the profile)")
	f.StringVar(&g.EndpointURL, "endpoint-url", "", "send every AWS request to this endpoint (AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_<SERVICE> are honoured too)")
	f.StringVar(&g.Output, "output", "text", "result format: text or json")
	f.StringVar(&g.LogLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	f.StringVar(&g.LogFormat, "log-format", "console", "log format on stderr: console or json")
	f.BoolVar(&g.NoProgress, "no-progress", false, "do not draw progress bars")
}

func (g *globalOptions) validate() error {
	switch g.Output {
	case "text", "json":
	default:
		return usagef("--output must be text or json, not %q", g.Output)
	}
	switch g.LogFormat {
	case "console", "json":
	default:
		return usagef("--log-format must be console or json, not %q", g.LogFormat)
	}
	switch g.LogLevel {
	case "trace", "debug", "info", "warn", "error":
	default:
		return usagef("--log-level must be one of trace, debug, info, warn, error, not %q", g.LogLevel)
	}
	return nil
}

// setupLogging configures the one logger of the process and puts it in ctx,
// where libraries find it with zerolog.Ctx.
func (g *globalOptions) setupLogging(ctx context.Context) context.Context {
	level, _ := zerolog.ParseLevel(g.LogLevel)
	var w io.Writer = g.Stderr
	if g.LogFormat == "console" {
		w = zerolog.ConsoleWriter{Out: g.Stderr, NoColor: !isTerminal(g.Stderr), TimeFormat: "15:04:05"}
	}
	l := zerolog.New(w).Level(level).With().Timestamp().Logger()
	g.logger = &l
	return l.WithContext(ctx)
}

// AWSConfig returns the responder's own AWS configuration.
func (g *globalOptions) AWSConfig(ctx context.Context) (aws.Config, error) {
	return awsconf.Load(ctx, awsconf.Options{Profile: g.Profile, Region: g.Region, EndpointURL: g.EndpointURL})
}

// s3PathStyle says whether S3 requests go path-style: S3-compatible
// servers (MinIO) behind an endpoint override want it.
func (g *globalOptions) s3PathStyle() bool {
	return g.EndpointURL != "" || os.Getenv("AWS_ENDPOINT_URL_S3") != "" || os.Getenv("AWS_ENDPOINT_URL") != ""
}

// Print writes a command's result: v as indented JSON with --output json,
// otherwise whatever text writes.
func (g *globalOptions) Print(v any, text func(w io.Writer) error) error {
	if g.Output == "json" {
		enc := json.NewEncoder(g.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	return text(g.Stdout)
}

// ShowProgress says whether to draw progress bars: on a terminal, in console
// log mode, unless --no-progress.
func (g *globalOptions) ShowProgress() bool {
	return !g.NoProgress && g.LogFormat == "console" && isTerminal(g.Stderr)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// operatorName is who is at the keyboard, for the ledger and the STS session name.
func operatorName(flag string) string {
	if flag != "" {
		return flag
	}
	for _, v := range []string{"IMPOUND_OPERATOR", "USER", "LOGNAME"} {
		if s := strings.TrimSpace(os.Getenv(v)); s != "" {
			return s
		}
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "unknown"
}
