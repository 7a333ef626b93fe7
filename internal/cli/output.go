package cli

import (
	"encoding/json"
	"io"
	"text/tabwriter"

	"github.com/spf13/pflag"
)

// OutputFlag registers -o/--output (table or json; the command table
// refuses any other value before the command runs).
func OutputFlag(fs *pflag.FlagSet, p *string) {
	fs.StringVarP(p, "output", "o", "table", "output format: table or json")
}

// Print writes v as indented JSON when format is "json", else the table
// that fill writes.
func Print(w io.Writer, format string, v any, fill func(tw *tabwriter.Writer)) error {
	if format == "json" {
		return JSON(w, v)
	}
	tw := Table(w)
	fill(tw)
	return tw.Flush()
}

// JSON writes v as indented JSON.
func JSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Table is the column layout of every table the CLIs print.
func Table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// NoArgs refuses positional arguments.
func NoArgs(args []string) error {
	if len(args) > 0 {
		return Usagef("unexpected argument %q", args[0])
	}
	return nil
}

// Required refuses a run where one of the named flags is unset or empty.
func Required(fs *pflag.FlagSet, names ...string) error {
	for _, n := range names {
		if f := fs.Lookup(n); f == nil || !f.Changed || f.Value.String() == "" {
			return Usagef("--%s is required", n)
		}
	}
	return nil
}
