package deploy_test

import (
	"os"
	"strings"
	"testing"

	"github.com/nudge-dev/nudge/internal/config"
	"github.com/nudge-dev/nudge/internal/dispatcher"
	"github.com/nudge-dev/nudge/internal/httpapi"
)

// TestSettingsDocumented keeps the settings tables of docs/operations.md
// equal to each binary's settings: a missing, extra or wrong row (flag,
// variable or default) fails.
func TestSettingsDocumented(t *testing.T) {
	t.Parallel()
	for _, bin := range []struct {
		name     string
		settings []config.Setting
	}{
		{"api", httpapi.Settings()},
		{"dispatcher", dispatcher.Settings()},
	} {
		t.Run(bin.name, func(t *testing.T) {
			t.Parallel()
			rows := docRows(t, "../docs/operations.md", "### "+bin.name+" settings")
			seen := map[string]bool{}
			for _, s := range bin.settings {
				seen[s.Env] = true
				row, ok := rows[s.Env]
				if !ok {
					t.Errorf("docs/operations.md (%s settings): no row for %s (-%s, default %q)", bin.name, s.Env, s.Flag, s.Default)
					continue
				}
				want := docRow{Flag: "`-" + s.Flag + "`", Default: "(empty)"}
				if s.Default != "" {
					want.Default = "`" + s.Default + "`"
				}
				if row.Flag != want.Flag || row.Default != want.Default {
					t.Errorf("docs/operations.md row %s: got flag %s default %s, want flag %s default %s", s.Env, row.Flag, row.Default, want.Flag, want.Default)
				}
				if row.Meaning == "" {
					t.Errorf("docs/operations.md row %s: empty meaning", s.Env)
				}
			}
			for env := range rows {
				if !seen[env] {
					t.Errorf("docs/operations.md (%s settings): row %s is not a setting of %s", bin.name, env, bin.name)
				}
			}
		})
	}
}

// docRow is one row of a settings table: | flag | variable | default | meaning |.
type docRow struct{ Flag, Default, Meaning string }

// docRows parses the table under heading in the markdown file at path,
// keyed by variable name.
func docRows(t *testing.T, path, heading string) map[string]docRow {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("%s: no heading %q", path, heading)
	}
	if i := strings.Index(section, "\n#"); i >= 0 {
		section = section[:i]
	}
	rows := map[string]docRow{}
	for line := range strings.Lines(section) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "| `") {
			continue // prose, the header and the separator
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		if len(cells) < 4 {
			t.Fatalf("%s: row %q: want 4 cells", path, line)
		}
		env := strings.Trim(strings.TrimSpace(cells[1]), "`")
		if _, dup := rows[env]; dup {
			t.Errorf("%s: %s documented twice", path, env)
		}
		rows[env] = docRow{Flag: strings.TrimSpace(cells[0]), Default: strings.TrimSpace(cells[2]),
			Meaning: strings.TrimSpace(strings.Join(cells[3:], " | "))}
	}
	if len(rows) == 0 {
		t.Fatalf("%s: no table rows under %q", path, heading)
	}
	return rows
}
