package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/topix-dev/topix/internal/version"
)

func (a *app) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, its VCS revision and time, and the Go version",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("version takes no arguments")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprint(a.stdout, version.Get().String())
			return nil
		},
	}
}
