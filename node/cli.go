package node

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
)

// CLI is the thingdb command line. Its fields are the process's standard
// streams and environment, so tests can run it in-process.
type CLI struct {
	Stdin     io.Reader
	Stdout    io.Writer
	Stderr    io.Writer
	LookupEnv func(string) (string, bool)
}

// errUsage marks an error whose message was already printed with usage.
var errUsage = errors.New("usage error")

type commandFunc func(ctx context.Context, args []string) error

func (c *CLI) commands() map[string]commandFunc {
	return map[string]commandFunc{
		"serve":             c.runServe,
		"init":              c.runInit,
		"put":               c.runPut,
		"get":               c.runGet,
		"history":           c.runHistory,
		"verify":            c.runVerify,
		"export":            c.runExport,
		"import":            c.runImport,
		"identity":          c.runIdentity,
		"token add":         c.runTokenAdd,
		"token list":        c.runTokenList,
		"token revoke":      c.runTokenRevoke,
		"passphrase change": c.runPassphraseChange,
		"tls ca":            c.runTLSCA,
		"tls issue":         c.runTLSIssue,
		"peers add":         c.runPeersAdd,
		"demo":              c.runDemo,
	}
}

const topUsage = `Usage: thingdb COMMAND [flags] [arguments]

ThingDB node and standalone command line. Every flag can also be set by an
environment variable: --data-dir is THINGDB_DATA_DIR.

Node:
  serve               run the HTTPS API

Ledger (local with --data-dir, or against a node with --server):
  init                create a ledger
  put THING JSON      append a new version of a thing (JSON, @file or - for stdin)
  get THING           show the latest version
  history THING       show every version with its provenance
  verify              check every entry, signature and chain (local only)
  export              write a signed batch of entries as JSON
  import FILE         import a signed batch (FILE or - for stdin)
  identity            show the node id and public keys
  passphrase change   re-wrap the ledger key under a new passphrase

Administration:
  token add NAME      create a token and print it once
  token list          list token names and scopes
  token revoke NAME   delete a token
  tls ca              create a certificate authority
  tls issue           issue a server or client certificate from a CA
  peers add           pin a peer's keys in a peer file

  demo DIR            run the single-node demo in a new directory

Run "thingdb COMMAND --help" for the flags of a command.
`

// Run runs the command line and returns the process exit code: 0 on
// success, 1 on failure, 2 on a usage error.
func (c *CLI) Run(ctx context.Context, args []string) int {
	if c.LookupEnv == nil {
		c.LookupEnv = os.LookupEnv
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(c.Stderr, topUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}

	commands := c.commands()
	name := args[0]
	rest := args[1:]
	if _, ok := commands[name]; !ok && len(args) > 1 {
		name = args[0] + " " + args[1]
		rest = args[2:]
	}
	run, ok := commands[name]
	if subcommands := groupSubcommands(commands, args[0]); !ok && len(subcommands) > 0 {
		return c.groupUsage(args, subcommands)
	}
	if !ok {
		fmt.Fprintf(c.Stderr, "thingdb: unknown command %q; run \"thingdb help\" for the list\n", strings.Join(args[:min(2, len(args))], " "))
		return 2
	}

	err := run(ctx, rest)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintf(c.Stderr, "thingdb %s: %v\n", name, err)
	return 1
}

// groupSubcommands returns the sorted subcommands of a command group such
// as "token", or nil when group is not one.
func groupSubcommands(commands map[string]commandFunc, group string) []string {
	var subcommands []string
	for name := range commands {
		if sub, found := strings.CutPrefix(name, group+" "); found {
			subcommands = append(subcommands, sub)
		}
	}
	sort.Strings(subcommands)
	return subcommands
}

// groupUsage prints the subcommands of a command group that was given alone,
// with --help or with an unknown subcommand. It returns 0 for a help request
// and 2 otherwise.
func (c *CLI) groupUsage(args, subcommands []string) int {
	group := args[0]
	list := strings.Join(subcommands, ", ")
	if len(args) > 1 && (args[1] == "-h" || args[1] == "--help" || args[1] == "help") {
		fmt.Fprintf(c.Stderr, "thingdb %s has the subcommands %s; run \"thingdb %s %s --help\" for the flags of one\n", group, list, group, subcommands[0])
		return 0
	}
	if len(args) == 1 {
		fmt.Fprintf(c.Stderr, "thingdb %s: missing subcommand: use one of %s\n", group, list)
		return 2
	}
	fmt.Fprintf(c.Stderr, "thingdb %s: unknown subcommand %q: use one of %s\n", group, args[1], list)
	return 2
}

// parse parses a command's flags and checks the number of positional
// arguments, printing usage on a mismatch.
func (c *CLI) parse(cmd *command, args []string, minArgs, maxArgs int) ([]string, error) {
	positional, err := cmd.parse(args, c.LookupEnv)
	if errors.Is(err, flag.ErrHelp) {
		return nil, err
	}
	if err != nil && !errors.Is(err, errEnvironment) {
		// The flag package has printed the error and the usage.
		return nil, errUsage
	}
	if err != nil {
		fmt.Fprintf(c.Stderr, "thingdb %s: %v\n", cmd.name, err)
		return nil, errUsage
	}
	if len(positional) < minArgs || len(positional) > maxArgs {
		fmt.Fprintf(c.Stderr, "thingdb %s: expected %s, got %d\n\n", cmd.name, argCount(minArgs, maxArgs), len(positional))
		cmd.printUsage(c.Stderr)
		return nil, errUsage
	}
	return positional, nil
}

func argCount(minArgs, maxArgs int) string {
	switch {
	case minArgs == maxArgs && minArgs == 0:
		return "no arguments"
	case minArgs == maxArgs:
		return fmt.Sprintf("%d arguments", minArgs)
	}
	return fmt.Sprintf("%d to %d arguments", minArgs, maxArgs)
}

// outputFlag adds --output (and -o) to cmd.
func outputFlag(cmd *command) *string {
	format := new(string)
	cmd.flags.StringVar(format, "output", "text", "output format: text or json")
	cmd.flags.StringVar(format, "o", "text", "shorthand for --output")
	return format
}

// emit writes v as indented JSON when format is json, else calls text.
func (c *CLI) emit(format string, v any, text func(w io.Writer)) error {
	switch format {
	case "json":
		enc := json.NewEncoder(c.Stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		return nil
	case "text", "":
		tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
		text(tw)
		return tw.Flush()
	}
	return fmt.Errorf("invalid output format %q: use text or json", format)
}

func (c *CLI) runServe(ctx context.Context, args []string) error {
	cmd := newCommand("serve", "", "Run the HTTPS API of one node. The ledger is created in --data-dir when none exists.", c.Stderr)
	var cfg ServeConfig
	cmd.serveFlags(&cfg)
	if _, err := c.parse(cmd, args, 0, 0); err != nil {
		return err
	}
	level, err := parseLogLevel(cfg.LogLevel)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(c.Stderr, &slog.HandlerOptions{Level: level}))
	if err := Serve(ctx, cfg, logger); err != nil {
		logger.Error("serve failed", "error", err)
		return err
	}
	return nil
}

func (c *CLI) runTokenAdd(ctx context.Context, args []string) error {
	cmd := newCommand("token add", "NAME", "Create a token with the given scopes, store its SHA-256 in the token directory and print the token once.", c.Stderr)
	dirs := tokenDirFlags(cmd)
	scopes := cmd.flags.String("scopes", "", "comma-separated scopes: "+scopeList())
	format := outputFlag(cmd)
	positional, err := c.parse(cmd, args, 1, 1)
	if err != nil {
		return err
	}
	dir, err := dirs.resolve()
	if err != nil {
		return err
	}

	parsed, err := ParseScopes(*scopes)
	if err != nil {
		return fmt.Errorf("check --scopes: %w", err)
	}
	token, err := AddToken(dir, positional[0], parsed)
	if err != nil {
		return err
	}

	out := struct {
		Name   string  `json:"name"`
		Scopes []Scope `json:"scopes"`
		Token  string  `json:"token"`
	}{positional[0], parsed, token}
	return c.emit(*format, out, func(w io.Writer) {
		// Only the token goes to standard output, so scripts can capture it.
		fmt.Fprintln(w, token)
		fmt.Fprintf(c.Stderr, "created token %q with scopes %s in %s; it is shown only this once\n", out.Name, joinScopes(parsed), dir)
	})
}

func (c *CLI) runTokenList(ctx context.Context, args []string) error {
	cmd := newCommand("token list", "", "List the tokens of the token directory: names and scopes, never the tokens.", c.Stderr)
	dirs := tokenDirFlags(cmd)
	format := outputFlag(cmd)
	if _, err := c.parse(cmd, args, 0, 0); err != nil {
		return err
	}
	dir, err := dirs.resolve()
	if err != nil {
		return err
	}
	records, err := LoadTokenDir(dir)
	if err != nil {
		return err
	}
	type listed struct {
		Name   string  `json:"name"`
		Scopes []Scope `json:"scopes"`
	}
	out := make([]listed, len(records))
	for i, r := range records {
		out[i] = listed{r.Name, r.Scopes}
	}
	return c.emit(*format, out, func(w io.Writer) {
		fmt.Fprintln(w, "NAME\tSCOPES")
		for _, r := range out {
			fmt.Fprintf(w, "%s\t%s\n", r.Name, joinScopes(r.Scopes))
		}
	})
}

func (c *CLI) runTokenRevoke(ctx context.Context, args []string) error {
	cmd := newCommand("token revoke", "NAME", "Delete a token's record. A running node rejects the token from its next reload.", c.Stderr)
	dirs := tokenDirFlags(cmd)
	positional, err := c.parse(cmd, args, 1, 1)
	if err != nil {
		return err
	}
	dir, err := dirs.resolve()
	if err != nil {
		return err
	}
	if err := RevokeToken(dir, positional[0]); err != nil {
		return err
	}
	fmt.Fprintf(c.Stdout, "revoked token %q\n", positional[0])
	return nil
}

type tokenDirs struct{ dataDir, tokenDir *string }

func tokenDirFlags(cmd *command) tokenDirs {
	return tokenDirs{
		dataDir:  cmd.flags.String("data-dir", "", "ledger directory; tokens are in its tokens/ subdirectory unless --token-dir is set"),
		tokenDir: cmd.flags.String("token-dir", "", "directory of token records (default DATA-DIR/tokens)"),
	}
}

func (d tokenDirs) resolve() (string, error) {
	if *d.tokenDir != "" {
		return *d.tokenDir, nil
	}
	if *d.dataDir != "" {
		return *d.dataDir + string(os.PathSeparator) + "tokens", nil
	}
	return "", fmt.Errorf("missing token directory: pass --token-dir or --data-dir, or set %s", EnvName("token-dir"))
}

func joinScopes(scopes []Scope) string {
	names := make([]string, len(scopes))
	for i, s := range scopes {
		names[i] = string(s)
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}
