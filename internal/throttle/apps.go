package throttle

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/nudge-dev/nudge/internal/apps"
)

// appPolicies is the policy argument block of the scripts (policies.lua)
// for one apps.Set: the deployment's policies with the default app's
// overrides, then the apps whose policies differ.
type appPolicies struct {
	set  *apps.Set
	args []any
}

// policyArgs returns the scripts' policy arguments for the current apps.
// They are rebuilt only when the set changes (the catalogue hands out a new
// *apps.Set on every change), so a call costs a pointer comparison.
func (t *Throttle) policyArgs(ctx context.Context) []any {
	var set *apps.Set
	if t.cfg.Apps != nil {
		set = t.cfg.Apps.Current()
	}
	if c := t.pols.Load(); c != nil && c.set == set {
		return c.args
	}
	c := &appPolicies{set: set, args: t.buildPolicyArgs(ctx, set)}
	t.pols.Store(c)
	return c.args
}

func (t *Throttle) buildPolicyArgs(ctx context.Context, set *apps.Set) []any {
	ios, android := t.cfg.IOS, t.cfg.Android
	if set == nil {
		return policyNums("", ios, android)
	}
	if a, ok := set.Get(apps.Default); ok {
		ios, android = t.override(ctx, a, ios, android)
	}
	var b strings.Builder
	for _, a := range set.All() {
		if a.ID == apps.Default {
			continue
		}
		ai, aa := t.override(ctx, a, t.cfg.IOS, t.cfg.Android)
		if ai == ios && aa == android {
			continue
		}
		if b.Len() == 0 {
			b.WriteByte(0x1e)
		}
		b.WriteString(a.ID)
		b.WriteByte(0x1f)
		for i, v := range append(ai.nums(), aa.nums()...) {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatInt(v, 10))
		}
		b.WriteByte(0x1e)
	}
	return policyNums(b.String(), ios, android)
}

// policyNums is the argument block: ios's and android's numbers, then
// the overrides.
func policyNums(overrides string, ios, android Policy) []any {
	out := make([]any, 0, 11)
	for _, v := range append(ios.nums(), android.nums()...) {
		out = append(out, v)
	}
	return append(out, overrides)
}

// override returns the iOS and Android policies of app a: base with a's
// non-zero fields in their place. An override that makes a policy invalid
// (say a max wait below the debounce) is logged and ignored for that
// platform.
func (t *Throttle) override(ctx context.Context, a apps.App, ios, android Policy) (Policy, Policy) {
	one := func(name string, l apps.Limits, base Policy) Policy {
		p := Policy{Limit: l.Limit, Window: time.Duration(l.Window), MinGap: time.Duration(l.MinGap),
			Debounce: time.Duration(l.Debounce), MaxWait: time.Duration(l.MaxWait)}.withDefaults(base)
		if err := p.validate(name); err != nil {
			t.log.WarnContext(ctx, "app policy override ignored", "app", a.ID, "err", err)
			return base
		}
		return p
	}
	return one("policy.ios", a.Policy.IOS, ios), one("policy.android", a.Policy.Android, android)
}
