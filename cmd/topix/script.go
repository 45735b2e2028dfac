package main

import (
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/topix-dev/topix/config"
	"github.com/topix-dev/topix/starlib"
)

// addScriptFlags adds the flags of the commands that run scripts:
// consumer, run and check.
func addScriptFlags(cmd *cobra.Command) {
	d := config.Defaults()
	f := cmd.Flags()
	f.Bool(config.FlagName("bytes"), d.Bytes, "hand data to the function as a dict of bytes to bytes instead of str to str [$TOPIX_BYTES]")
	f.Int64(config.FlagName("max_steps"), d.MaxSteps, "Starlark steps one call may take before it fails [$TOPIX_MAX_STEPS]")
	f.Duration(config.FlagName("call_timeout"), d.CallTimeout, "wall-clock time one call may take before it fails [$TOPIX_CALL_TIMEOUT]")
	f.String(config.FlagName("max_memory"), "auto", "heap size (like 512MiB or 2GiB) above which the calls in flight fail with \"memory limit exceeded\"; auto is half of the machine's or the container's memory [$TOPIX_MAX_MEMORY]")
}

// loadScript checks the script target before anything else happens; its
// errors are bad input.
func loadScript(target string, cfg config.Config, log *slog.Logger) (*starlib.Script, *starlib.Env, error) {
	path, fn, err := starlib.ParseTarget(target)
	if err != nil {
		return nil, nil, usageError(err)
	}
	env := &starlib.Env{
		Logger:      log,
		Bytes:       cfg.Bytes,
		MaxSteps:    uint64(cfg.MaxSteps),
		CallTimeout: cfg.CallTimeout,
	}
	ceiling, _ := cfg.MemoryCeiling()
	env.MaxMemory = uint64(ceiling)
	script, err := starlib.Compile(path, fn, env)
	if err != nil {
		return nil, nil, usageError(err)
	}
	return script, env, nil
}
