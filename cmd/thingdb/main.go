// Command thingdb runs a ThingDB node (`thingdb serve`) and the standalone
// command line for ledgers, tokens, certificates and demos. `thingdb help`
// lists the commands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/thingdb/thingdb/node"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	cli := &node.CLI{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	code := cli.Run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
