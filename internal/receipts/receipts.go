// Package receipts makes wake receipts unforgeable. Every push id nudge
// sends is signed: the dispatcher appends an HMAC over the device id and
// the unsigned push id (lane, send time, collapse id), and the api
// verifies it when the app posts its receipt. A push id made up by a
// client, copied from another device's push, or already counted once is
// refused, so wake rates count only pushes nudge sent to that device.
//
// The HMAC key is 32 random bytes in the Redis string keys.ReceiptKey(),
// created by the first process that needs it (SET NX) and cached for the
// life of a Signer. Whoever can read Redis can forge receipts; receipts
// only feed statistics, and Redis is already trusted with everything else.
//
// Replays are refused with keys.ReceiptSeen(device, push id), set with
// SET NX and an expiry of the receipt's maximum age.
package receipts

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/redis/go-redis/v9"
)

// Errors of Verify and Claim.
var (
	// ErrForged means the push id carries no valid signature for this device.
	ErrForged = errors.New("push id not signed by nudge for this device")
	// ErrReplayed means a receipt for this push id was already counted.
	ErrReplayed = errors.New("receipt for this push id already counted")
)

// macLen is the length of the signature in base64url characters: 128 bits.
const macLen = 22

// Signer signs and verifies push ids with the key in Redis.
type Signer struct {
	rdb redis.UniversalClient

	mu  sync.Mutex
	key []byte // set once

	macs sync.Pool // *macer keyed with key
}

// NewSigner returns a Signer on rdb. The key is read (or created) on first use.
func NewSigner(rdb redis.UniversalClient) *Signer { return &Signer{rdb: rdb} }

func (s *Signer) loadKey(ctx context.Context) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.key != nil {
		return s.key, nil
	}
	var fresh [32]byte
	_, _ = rand.Read(fresh[:])
	if err := s.rdb.SetNX(ctx, keys.ReceiptKey(), fresh[:], 0).Err(); err != nil {
		return nil, fmt.Errorf("create receipt key: %w", err)
	}
	k, err := s.rdb.Get(ctx, keys.ReceiptKey()).Bytes()
	if err != nil {
		return nil, fmt.Errorf("read receipt key: %w", err)
	}
	if len(k) < 16 {
		return nil, fmt.Errorf("receipt key in %s is %d bytes, want 32", keys.ReceiptKey(), len(k))
	}
	s.key = k
	return k, nil
}

// macer is one HMAC-SHA256 with the Signer's key and its scratch space;
// a Signer keeps them in a pool, since every push is signed.
type macer struct {
	h   hash.Hash
	buf []byte
}

// mac returns the signature of id for device: base64url of the HMAC over
// the device id in decimal, a zero byte and id, cut to macLen characters.
func (s *Signer) mac(key []byte, device uint64, id string) string {
	m, _ := s.macs.Get().(*macer)
	if m == nil {
		m = &macer{h: hmac.New(sha256.New, key)}
	} else {
		m.h.Reset()
	}
	m.buf = strconv.AppendUint(m.buf[:0], device, 10)
	m.buf = append(m.buf, 0)
	m.buf = append(m.buf, id...)
	m.h.Write(m.buf)
	m.buf = m.h.Sum(m.buf[:0])
	var enc [43]byte // base64url of 32 bytes, unpadded
	base64.RawURLEncoding.Encode(enc[:], m.buf)
	s.macs.Put(m)
	return string(enc[:macLen])
}

// Sign returns id with its signature for device appended ("<id>.<mac>").
func (s *Signer) Sign(ctx context.Context, device uint64, id string) (string, error) {
	k, err := s.loadKey(ctx)
	if err != nil {
		return "", err
	}
	return id + "." + s.mac(k, device, id), nil
}

// Verify checks that pushID was signed for device and returns the id
// without its signature. It fails with ErrForged.
func (s *Signer) Verify(ctx context.Context, device uint64, pushID string) (string, error) {
	i := strings.LastIndexByte(pushID, '.')
	if i < 0 || len(pushID)-i-1 != macLen {
		return "", ErrForged
	}
	k, err := s.loadKey(ctx)
	if err != nil {
		return "", err
	}
	id := pushID[:i]
	if !hmac.Equal([]byte(pushID[i+1:]), []byte(s.mac(k, device, id))) {
		return "", ErrForged
	}
	return id, nil
}

// Claim records that the receipt of pushID for device was counted. It
// fails with ErrReplayed when it already was. ttl is how long a receipt
// for the push could still count.
func (s *Signer) Claim(ctx context.Context, device uint64, pushID string, ttl time.Duration) error {
	ok, err := s.rdb.SetNX(ctx, keys.ReceiptSeen(device, pushID), 1, ttl).Result()
	if err != nil {
		return fmt.Errorf("claim receipt of device %d: %w", device, err)
	}
	if !ok {
		return ErrReplayed
	}
	return nil
}
