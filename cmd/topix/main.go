// Command topix runs a Starlark function over every entry of a Redis
// stream, through a consumer group, and adds entries to streams.
//
//	topix consumer orders billing app.star:consumer
//	topix emit orders '{"sku": "A-1", "qty": 2}'
//
// Run topix --help for the commands and their options.
package main

import (
	"context"
	"os"
)

func main() {
	stop := startProfile()
	code := run(context.Background(), os.Args[1:], os.Environ(), os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
