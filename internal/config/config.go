// Package config binds the settings of nudge's binaries to command-line
// flags and NUDGE_* environment variables, and opens Redis for them.
//
// Each binary declares its settings as a list of Setting values (flag name,
// environment variable, default, help). The list is the single source of
// truth: Parse binds it, and docs checks can compare it with the operations
// guide. Precedence is flag, then environment variable, then default.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Setting declares one configuration value of a binary.
type Setting struct {
	Flag    string // flag name without dashes, e.g. "http-addr"
	Env     string // environment variable, e.g. "NUDGE_HTTP_ADDR"
	Default string // value when neither flag nor environment sets it
	Help    string // one line for -help and docs/operations.md
}

// Name is how error messages refer to the setting: "NUDGE_X (-x)".
func (s Setting) Name() string { return s.Env + " (-" + s.Flag + ")" }

// ErrHelp is returned by Parse when -h or -help was given; the usage has
// already been printed.
var ErrHelp = flag.ErrHelp

// Values holds the parsed settings of one binary, by flag name.
type Values struct {
	byFlag   map[string]string
	settings map[string]Setting
	args     []string
}

// Parse reads settings from args (flags) and getenv, in that order of
// precedence, falling back to each setting's default. Usage (-help: a line
// saying what the binary is, then every setting with its type, variable
// and default) and flag errors go to stderr. Remaining positional arguments are available from Args.
func Parse(name string, settings []Setting, args []string, getenv func(string) string, stderr io.Writer) (*Values, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	setUsage(fs, name, settings)
	v := &Values{byFlag: make(map[string]string, len(settings)), settings: make(map[string]Setting, len(settings))}
	ptrs := make(map[string]*string, len(settings))
	for _, s := range settings {
		if _, dup := v.settings[s.Flag]; dup {
			return nil, fmt.Errorf("setting -%s declared twice", s.Flag)
		}
		v.settings[s.Flag] = s
		ptrs[s.Flag] = fs.String(s.Flag, s.Default, s.Help+" [$"+s.Env+"]")
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, s := range settings {
		val := *ptrs[s.Flag]
		if !set[s.Flag] {
			if e := getenv(s.Env); e != "" {
				val = e
			}
		}
		v.byFlag[s.Flag] = strings.TrimSpace(val)
	}
	v.args = fs.Args()
	return v, nil
}

// Args returns the positional arguments left after the flags.
func (v *Values) Args() []string { return v.args }

// String returns the value of the setting with flag name flag.
func (v *Values) String(flag string) string {
	if _, ok := v.settings[flag]; !ok {
		panic("config: undeclared setting " + flag) // programming error
	}
	return v.byFlag[flag]
}

// Duration parses the setting as a Go duration ("30s", "5m").
func (v *Values) Duration(flag string) (time.Duration, error) {
	s := v.String(flag)
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, &Error{Setting: v.settings[flag], Value: s, Reason: "want a duration such as 30s or 5m"}
	}
	return d, nil
}

// Int parses the setting as a decimal integer.
func (v *Values) Int(flag string) (int, error) {
	s := v.String(flag)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, &Error{Setting: v.settings[flag], Value: s, Reason: "want a whole number"}
	}
	return n, nil
}

// Error is a setting with a bad value. Its message names the environment
// variable and the flag, so the operator knows exactly what to change.
type Error struct {
	Setting Setting
	Value   string
	Reason  string
}

func (e *Error) Error() string {
	return fmt.Sprintf("bad value %q for %s: %s", e.Value, e.Setting.Name(), e.Reason)
}

// Invalid returns an *Error for the setting with flag name flag of v.
func (v *Values) Invalid(flag, reason string) error {
	return &Error{Setting: v.settings[flag], Value: v.String(flag), Reason: reason}
}

// Join combines configuration errors so the operator sees all of them at once.
func Join(errs ...error) error { return errors.Join(errs...) }
