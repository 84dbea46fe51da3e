package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/nudge-dev/nudge/internal/config"
)

// Settings lists every setting of the devstack: flag, environment
// variable, default and help. The api's and dispatcher's own NUDGE_*
// variables (throttle policy, log level …) pass through to them.
func Settings() []config.Setting {
	return slices.Concat(config.RedisSettings(), config.LogSettings(), []config.Setting{
		{Flag: "api-addr", Env: "NUDGE_DEVSTACK_API_ADDR", Default: "127.0.0.1:8080", Help: "listen address of the api and the console (:8080 for every interface)"},
		{Flag: "dispatcher-addr", Env: "NUDGE_DEVSTACK_DISPATCHER_ADDR", Default: "127.0.0.1:9090", Help: "listen address of the dispatcher's /metrics and probes"},
		{Flag: "newsroom-addr", Env: "NUDGE_DEVSTACK_NEWSROOM_ADDR", Default: "127.0.0.1:8090", Help: "listen address of the sample news room's feeds"},
		{Flag: "pushemu-addr", Env: "NUDGE_DEVSTACK_PUSHEMU_ADDR", Default: "127.0.0.1:8091", Help: "listen address of the push emulators' control API"},
		{Flag: "devices", Env: "NUDGE_DEVSTACK_DEVICES", Default: "1000", Help: "number of simulated devices"},
		{Flag: "article-interval", Env: "NUDGE_DEVSTACK_ARTICLE_INTERVAL", Default: "5s", Help: "time between two articles of the news room"},
		{Flag: "feed-poll-interval", Env: "NUDGE_DEVSTACK_FEED_POLL_INTERVAL", Default: "1m", Help: "catalogue poll interval of the news room's feeds (the news room also pings nudge after each article)"},
		{Flag: "seed", Env: "NUDGE_DEVSTACK_SEED", Default: "1", Help: "seed of the simulated fleet and news room"},
		{Flag: "miss-rate", Env: "NUDGE_DEVSTACK_MISS_RATE", Default: "0.05", Help: "fraction of pushes that do not wake the simulated app (0 to <1)"},
		{Flag: "summary-interval", Env: "NUDGE_DEVSTACK_SUMMARY_INTERVAL", Default: "3s", Help: "how often the summary line is printed"},
		{Flag: "log-file", Env: "NUDGE_DEVSTACK_LOG_FILE", Default: "", Help: "file for the api's, dispatcher's and devstack's JSON logs (empty: a file in the temp dir)"},
	})
}

// Run is the whole devstack process; cmd/devstack's main only calls it.
// It starts the stack, prints where to look, then a summary line every
// summary interval until ctx ends or SIGINT/SIGTERM, and shuts down.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	v, err := config.Parse("devstack", Settings(), args, getenv, stderr)
	if err != nil {
		return err
	}
	if len(v.Args()) > 0 {
		return fmt.Errorf("unexpected argument %q", v.Args()[0])
	}
	cfg, every, err := runConfig(v)
	if err != nil {
		return err
	}

	logPath := v.String("log-file")
	if logPath == "" {
		logPath = filepath.Join(os.TempDir(), "nudge-devstack.log")
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("open log file (NUDGE_DEVSTACK_LOG_FILE): %w", err)
	}
	defer logFile.Close()

	fmt.Fprintf(stdout, "nudge devstack: starting Redis, push emulators, api, dispatcher, news room\nand %s simulated devices…\n", group(int64(cfg.Devices)))
	s, err := New(cfg, getenv, logFile)
	if err != nil {
		return err
	}
	if err := s.Start(ctx); err != nil {
		return fmt.Errorf("%w (logs: %s)", err, logPath)
	}
	defer s.Stop()
	printBanner(stdout, s, cfg, logPath, getenv)

	tty := isTerminal(stdout)
	shown := 0 // summary lines on the terminal
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if tty {
				fmt.Fprintln(stdout)
			}
			fmt.Fprintln(stdout, "nudge devstack: shutting down…")
			s.Stop()
			fmt.Fprintln(stdout, "nudge devstack: stopped")
			return nil
		case <-s.Failed():
			if tty {
				fmt.Fprintln(stdout)
			}
			return fmt.Errorf("%w (logs: %s)", s.Err(), logPath)
		case <-t.C:
		}
		sum, err := s.Summary(ctx)
		lines := sum.Lines(SummaryWidth)
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			lines = []string{"summary unavailable: " + err.Error()}
		}
		if tty {
			shown = redraw(stdout, shown, lines)
		} else {
			fmt.Fprintln(stdout, strings.Join(lines, "\n"))
		}
	}
}

// redraw replaces the shown lines of the previous summary at the bottom of
// a terminal with lines, leaving the cursor at the end of the last one, and
// returns how many lines are now shown.
func redraw(w io.Writer, shown int, lines []string) int {
	var b strings.Builder
	if shown > 1 {
		fmt.Fprintf(&b, "\x1b[%dA", shown-1) // up to the first line shown
	}
	b.WriteString("\r\x1b[J") // erase from there to the end of the screen
	b.WriteString(strings.Join(lines, "\n"))
	io.WriteString(w, b.String())
	return len(lines)
}

// runConfig maps the parsed settings to the stack's Config and the summary
// interval. Every bad value is reported at once.
func runConfig(v *config.Values) (Config, time.Duration, error) {
	var errs []error
	dur := func(flag string) time.Duration {
		d, err := v.Duration(flag)
		if err == nil && d <= 0 {
			err = v.Invalid(flag, "want a positive duration")
		}
		errs = append(errs, err)
		return d
	}
	devices, err := v.Int("devices")
	if err == nil && (devices < 1 || devices > 1_000_000) {
		err = v.Invalid("devices", "want 1 to 1000000")
	}
	errs = append(errs, err)
	seed, err := strconv.ParseUint(v.String("seed"), 10, 64)
	if err != nil {
		errs = append(errs, v.Invalid("seed", "want a non-negative integer"))
	}
	miss, err := strconv.ParseFloat(v.String("miss-rate"), 64)
	if err != nil || miss < 0 || miss >= 1 {
		errs = append(errs, v.Invalid("miss-rate", "want a fraction from 0 up to (not including) 1, such as 0.05"))
	}
	if miss == 0 {
		miss = -1 // the fleet's "none"
	}
	if _, err := v.LogLevel(); err != nil {
		errs = append(errs, err)
	}
	cfg := Config{
		RedisURL:          v.String("redis-url"),
		EmbeddedRedisAddr: v.String("embedded-redis-addr"),
		APIAddr:           v.String("api-addr"),
		DispatcherAddr:    v.String("dispatcher-addr"),
		NewsroomAddr:      v.String("newsroom-addr"),
		EmulatorAddr:      v.String("pushemu-addr"),
		Devices:           devices,
		ArticleInterval:   dur("article-interval"),
		FeedPollInterval:  dur("feed-poll-interval"),
		Seed:              seed,
		MissRate:          miss,
		LogLevel:          v.String("log-level"),
	}
	every := dur("summary-interval")
	return cfg, every, errors.Join(errs...)
}

// printBanner prints where to look, in lines of at most 80 columns (the
// admin key and long paths aside).
func printBanner(w io.Writer, s *Stack, cfg Config, logPath string, getenv func(string) string) {
	redisNote := ""
	if s.Embedded() {
		redisNote = "\n               (embedded, in memory, lost on exit; NUDGE_REDIS_URL for yours)"
	}
	var policy []string
	for _, k := range slices.Sorted(maps.Keys(DemoPolicy)) {
		val := DemoPolicy[k]
		if e := getenv(k); e != "" {
			val = e
		}
		policy = append(policy, strings.TrimPrefix(k, "NUDGE_")+"="+val)
	}
	fmt.Fprintf(w, `
  console      %s   (log in with the admin key)
  admin key    %s
  api          %s   (metrics: /metrics)
  dispatcher   %s/metrics
  emulators    %s
               (FCM and APNs deliveries; the console's switcher picks the app)
  news room    %s/feeds/headlines.xml
               (a new article every %s, then a ping to nudge)
  redis        %s%s
  logs         %s

  DEMO TIME SCALE: the throttle policy is shortened so that pushes, deferrals
  and coalescing all show within a minute:
%s
  Production defaults are minutes to an hour; see docs/operations.md.

  nudge's own figures for the last hour, every few seconds (Ctrl-C stops):
`, s.ConsoleURL(), s.AdminKey(), s.APIURL(), s.DispatcherURL(), emulatorLines(s),
		s.NewsroomURL(), cfg.ArticleInterval, s.RedisURL(), redisNote, logPath, wrapWords(policy, "    ", SummaryWidth))
}

// emulatorLines lists each app's emulators' control API.
func emulatorLines(s *Stack) string {
	urls := s.AppEmulatorURLs()
	var lines []string
	for _, a := range DevApps {
		lines = append(lines, fmt.Sprintf("%s/admin/stats   (%s app)", urls[a.ID], a.ID))
	}
	return strings.Join(lines, "\n               ")
}

// wrapWords joins words with spaces into lines of at most width columns,
// each starting with indent.
func wrapWords(words []string, indent string, width int) string {
	var lines []string
	line := indent
	for _, word := range words {
		if line != indent && utf8.RuneCountInString(line+" "+word) > width {
			lines = append(lines, line)
			line = indent
		}
		if line != indent {
			line += " "
		}
		line += word
	}
	return strings.Join(append(lines, line), "\n")
}

// isTerminal reports whether w is a character device, where the summary
// line is rewritten in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
