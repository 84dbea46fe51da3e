package push

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"firebase.google.com/go/v4/messaging"
	"github.com/sideshow/apns2"
)

const (
	maxCollapseID = 64
	maxFCMTTL     = 28 * 24 * time.Hour
)

// fields are the payload contract's string values for one message.
type fields struct {
	typ, task, feeds, event, pushID, reason, since, until, sentAt string
}

func newFields(m *Message, task string, now time.Time) fields {
	return fields{
		typ:    "nudge.sync",
		task:   task,
		feeds:  strings.Join(m.Feeds, ","),
		event:  m.Event,
		pushID: m.ID,
		reason: string(m.Reason),
		since:  formatSince(m.Since),
		until:  formatSince(m.Until),
		sentAt: strconv.FormatInt(now.UnixMilli(), 10),
	}
}

// formatSince renders cursors as "feed:cursor" pairs joined by commas.
func formatSince(cs []Cursor) string {
	if len(cs) == 0 {
		return ""
	}
	var b strings.Builder
	for i, c := range cs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(c.Feed)
		b.WriteByte(':')
		b.WriteString(strconv.FormatUint(c.Seq, 10))
	}
	return b.String()
}

// dataMap is the FCM data map; empty optional fields are left out.
func (f *fields) dataMap() map[string]string {
	d := make(map[string]string, 8)
	d["type"] = f.typ
	d["task"] = f.task
	d["feeds"] = f.feeds
	d["reason"] = f.reason
	d["sent_at"] = f.sentAt
	if f.event != "" {
		d["event"] = f.event
	}
	if f.pushID != "" {
		d["push_id"] = f.pushID
	}
	if f.since != "" {
		d["since"] = f.since
	}
	if f.until != "" {
		d["until"] = f.until
	}
	return d
}

// apnsPayload is the APNs JSON body: aps first, custom keys beside it.
// It is written by hand (same output as encoding/json for these string
// fields) because it runs once per push.
func apnsPayload(f *fields, alert *Alert) ([]byte, error) {
	b := make([]byte, 0, 256)
	b = append(b, `{"aps":{`...)
	if alert != nil {
		b = append(b, `"alert":{"title":`...)
		b = appendJSONString(b, alert.Title)
		b = append(b, `,"body":`...)
		b = appendJSONString(b, alert.Body)
		b = append(b, `},"content-available":1,"mutable-content":1}`...)
	} else {
		b = append(b, `"content-available":1}`...)
	}
	field := func(name, v string, always bool) {
		if v == "" && !always {
			return
		}
		b = append(b, ',', '"')
		b = append(b, name...)
		b = append(b, '"', ':')
		b = appendJSONString(b, v)
	}
	field("type", f.typ, true)
	field("task", f.task, true)
	field("feeds", f.feeds, true)
	field("event", f.event, false)
	field("push_id", f.pushID, false)
	field("reason", f.reason, true)
	field("since", f.since, false)
	field("until", f.until, false)
	field("sent_at", f.sentAt, true)
	b = append(b, '}')
	if len(b) > MaxPayload {
		return nil, &PayloadTooLargeError{Provider: APNs, Size: len(b), Limit: MaxPayload}
	}
	return b, nil
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 replaced by U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// checkMessage refuses what can never be sent, before composing.
func checkMessage(m *Message) error {
	switch {
	case m.Token == "":
		return fmt.Errorf("push %s: empty token: %w", m.ID, ErrInvalidMessage)
	case m.Platform != Android && m.Platform != IOS:
		return fmt.Errorf("push %s: platform %q is not android or ios: %w", m.ID, m.Platform, ErrInvalidMessage)
	case m.Environment != "" && m.Environment != Production && m.Environment != Sandbox:
		return fmt.Errorf("push %s: environment %q is not production or sandbox: %w", m.ID, m.Environment, ErrInvalidMessage)
	case len(m.CollapseID) > maxCollapseID:
		return fmt.Errorf("push %s: collapse id is %d bytes, over 64: %w", m.ID, len(m.CollapseID), ErrInvalidMessage)
	case m.Provider == APNs && m.Platform != IOS:
		return fmt.Errorf("push %s: apns delivers only to ios: %w", m.ID, ErrInvalidMessage)
	}
	return nil
}

// fcmMessage composes the FCM message for m.
func fcmMessage(m *Message, f *fields, ttl time.Duration, now time.Time) (*messaging.Message, error) {
	data := f.dataMap()
	size := 0
	for k, v := range data {
		size += len(k) + len(v)
	}
	if m.Alert != nil {
		size += len(m.Alert.Title) + len(m.Alert.Body)
	}
	if size > MaxPayload {
		return nil, &PayloadTooLargeError{Provider: FCM, Size: size, Limit: MaxPayload}
	}
	ttl = min(ttl, maxFCMTTL)
	android := &messaging.AndroidConfig{Priority: "normal", TTL: &ttl, CollapseKey: m.CollapseID}
	msg := &messaging.Message{Token: m.Token, Data: data, Android: android}
	if m.Alert != nil {
		android.Priority = "high"
		msg.Notification = &messaging.Notification{Title: m.Alert.Title, Body: m.Alert.Body}
	}
	if m.Platform == IOS {
		// FCM forwards the apns block as is, so the limit applies to the
		// payload APNs will see too.
		if _, err := apnsPayload(f, m.Alert); err != nil {
			return nil, err
		}
		h := map[string]string{
			"apns-push-type":  "background",
			"apns-priority":   "5",
			"apns-expiration": strconv.FormatInt(now.Add(ttl).Unix(), 10),
		}
		if m.CollapseID != "" {
			h["apns-collapse-id"] = m.CollapseID
		}
		aps := &messaging.Aps{ContentAvailable: true}
		if m.Alert != nil {
			h["apns-push-type"], h["apns-priority"] = "alert", "10"
			aps.MutableContent = true
			aps.Alert = &messaging.ApsAlert{Title: m.Alert.Title, Body: m.Alert.Body}
		}
		msg.APNS = &messaging.APNSConfig{Headers: h, Payload: &messaging.APNSPayload{Aps: aps}}
	}
	return msg, nil
}

// apnsNotification composes the APNs notification for m.
func apnsNotification(m *Message, f *fields, topic string, ttl time.Duration, now time.Time) (*apns2.Notification, error) {
	p, err := apnsPayload(f, m.Alert)
	if err != nil {
		return nil, err
	}
	n := &apns2.Notification{
		DeviceToken: m.Token,
		Topic:       topic,
		CollapseID:  m.CollapseID,
		Expiration:  now.Add(ttl),
		Priority:    apns2.PriorityLow,
		PushType:    apns2.PushTypeBackground,
		Payload:     p,
	}
	if isUUID(m.ID) {
		n.ApnsID = m.ID
	}
	if m.Alert != nil {
		n.Priority = apns2.PriorityHigh
		n.PushType = apns2.PushTypeAlert
	}
	return n, nil
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}
