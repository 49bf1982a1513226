package node

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// errEnvironment marks an invalid flag value that came from an environment
// variable, which the flag package has not printed.
var errEnvironment = errors.New("invalid environment variable")

// envPrefix starts the environment variable of every flag: --data-dir is
// also THINGDB_DATA_DIR.
const envPrefix = "THINGDB_"

// EnvName returns the environment variable that sets flag name.
func EnvName(name string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// command is one CLI subcommand with its flags.
type command struct {
	name    string // as typed, such as "token add"
	args    string // positional arguments for the usage line
	summary string
	flags   *flag.FlagSet
}

func newCommand(name, args, summary string, stderr io.Writer) *command {
	c := &command{name: name, args: args, summary: summary, flags: flag.NewFlagSet(name, flag.ContinueOnError)}
	c.flags.SetOutput(stderr)
	c.flags.Usage = func() { c.printUsage(stderr) }
	return c
}

func (c *command) printUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: thingdb %s [flags] %s\n\n%s\n\nFlags (each also read from the environment variable shown):\n", c.name, c.args, c.summary)
	c.flags.VisitAll(func(f *flag.Flag) {
		if len(f.Name) == 1 {
			fmt.Fprintf(w, "  -%s\n      %s", f.Name, f.Usage)
		} else {
			fmt.Fprintf(w, "  --%s (%s)\n      %s", f.Name, EnvName(f.Name), f.Usage)
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}

// parse parses args, allowing flags before and after positional arguments,
// then fills every flag not given on the command line from its environment
// variable. lookupEnv is os.LookupEnv outside tests.
func (c *command) parse(args []string, lookupEnv func(string) (string, bool)) ([]string, error) {
	var positional []string
	for {
		if err := c.flags.Parse(args); err != nil {
			return nil, err
		}
		rest := c.flags.Args()
		if len(rest) == 0 {
			break
		}
		if rest[0] == "--" {
			positional = append(positional, rest[1:]...)
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}

	// The flag package printed its own parse errors. Errors from the
	// environment carry errEnvironment, so the caller prints them.
	given := map[string]bool{}
	c.flags.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	c.flags.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || len(f.Name) == 1 {
			return
		}
		name := EnvName(f.Name)
		value, ok := lookupEnv(name)
		if !ok {
			return
		}
		if err := c.flags.Set(f.Name, value); err != nil {
			errs = append(errs, fmt.Errorf("%w %s=%q: %w; unset it or give a value that --%s accepts (thingdb %s --help)", errEnvironment, name, value, err, f.Name, c.name))
		}
	})
	return positional, errors.Join(errs...)
}

// readSecretFile reads a passphrase or token file and removes one trailing
// newline. The content never appears in errors.
func readSecretFile(kind, path string) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("missing %s file: pass --%s-file or set %s", kind, kind, EnvName(kind+"-file"))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s file: %w", kind, err)
	}
	data = []byte(strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r"))
	if len(data) == 0 {
		return nil, fmt.Errorf("%s file %s is empty: write the %s into it", kind, path, kind)
	}
	return data, nil
}
