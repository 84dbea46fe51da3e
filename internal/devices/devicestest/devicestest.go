// Package devicestest writes large fleets of devices straight into the
// registry's Redis layout, for benchmarks and crash tests that need 100k
// devices in a second or two rather than 100k registrations.
package devicestest

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/keys"
)

// Kind returns the provider and platform of device id in the standard mix:
// 40% iOS on APNs, 10% iOS on FCM, 50% Android on FCM.
func Kind(id uint64) (provider, platform string) {
	switch r := id % 10; {
	case r < 4:
		return "apns", "ios"
	case r == 4:
		return "fcm", "ios"
	default:
		return "fcm", "android"
	}
}

// Token returns a well-formed token for device id of its Kind: 64 hex
// characters for APNs, 152 characters for FCM.
func Token(id uint64) string {
	if p, _ := Kind(id); p == "apns" {
		return fmt.Sprintf("%064x", id)
	}
	return fmt.Sprintf("d%021d:APA91b", id) + strings.Repeat("Q", 152-29)
}

// Write writes devices from..to (inclusive) of the standard mix, each
// subscribed to feedOf(id) with background sync on: the device hash, the
// token index entry and the subscription bit, in pipelines — what
// Registry.Register leaves behind. It raises the device id sequence to to.
func Write(tb testing.TB, rdb redis.UniversalClient, from, to uint64, feedOf func(uint64) string) {
	tb.Helper()
	ctx := tb.Context()
	now := strconv.FormatInt(time.Now().Unix(), 10)
	pipe := rdb.Pipeline()
	flush := func() {
		if _, err := pipe.Exec(ctx); err != nil {
			tb.Fatalf("write devices: %v", err)
		}
	}
	for id := from; id <= to; id++ {
		pv, pl := Kind(id)
		tok := Token(id)
		feed := feedOf(id)
		sh := sha256.Sum256([]byte("secret-" + strconv.FormatUint(id, 10)))
		pipe.HSet(ctx, keys.Device(id),
			"tk", tok, "pv", pv, "pl", pl, "en", "production", "fd", feed, "bg", "1", "mi", "0",
			"lo", "en-US", "tz", "Europe/Berlin", "av", "1.4.0", "sh", string(sh[:]), "ct", now, "ut", now)
		digest := sha256.Sum256([]byte(tok))
		pipe.HSet(ctx, keys.TokenShard(digest[:12]), string(digest[:12]), strconv.FormatUint(id, 10))
		k, bit := keys.SubChunkOf(id)
		pipe.SetBit(ctx, keys.SubChunk(feed, k), bit, 1)
		if pipe.Len() >= 9000 {
			flush()
		}
	}
	flush()
	seq, err := rdb.Get(ctx, keys.DeviceSeq()).Uint64()
	if err != nil && !errors.Is(err, redis.Nil) {
		tb.Fatalf("read device sequence: %v", err)
	}
	if seq < to {
		if err := rdb.Set(ctx, keys.DeviceSeq(), to, 0).Err(); err != nil {
			tb.Fatalf("set device sequence: %v", err)
		}
	}
}
