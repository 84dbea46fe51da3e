package devstack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// APIError is an error answer of the nudge api: its status and the
// {"error":{"code","message","field"}} body.
type APIError struct {
	Status  int
	Code    string
	Message string
	Field   string
}

func (e *APIError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("api answered %d %s (%s): %s", e.Status, e.Code, e.Field, e.Message)
	}
	return fmt.Sprintf("api answered %d %s: %s", e.Status, e.Code, e.Message)
}

// client speaks the api's REST contract the way an app and a CMS do.
type client struct {
	base string // e.g. http://127.0.0.1:8080
	http *http.Client
}

func newClient(base string, maxConns int) *client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = maxConns
	tr.MaxConnsPerHost = maxConns
	tr.Proxy = nil // loopback only: never send the simulation through a proxy
	return &client{base: base, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// do sends one JSON request with an optional bearer token, decodes a JSON
// answer into out (if not nil) and returns the status. Any status of 400
// and above becomes an *APIError.
func (c *client) do(ctx context.Context, method, path, bearer string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, fmt.Errorf("build %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("read answer of %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 400 {
		var e struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
				Field   string `json:"field"`
			} `json:"error"`
		}
		_ = json.Unmarshal(raw, &e)
		return resp.StatusCode, fmt.Errorf("%s %s: %w", method, path, &APIError{
			Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message, Field: e.Error.Field,
		})
	}
	if out != nil && len(raw) > 0 && resp.StatusCode != http.StatusNotModified {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode answer of %s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// registration is the body of POST /v1/devices.
type registration struct {
	Provider       string         `json:"provider"`
	Token          string         `json:"token"`
	Platform       string         `json:"platform"`
	Environment    string         `json:"environment,omitempty"`
	Feeds          []string       `json:"feeds"`
	BackgroundSync backgroundSync `json:"background_sync"`
	Locale         string         `json:"locale"`
	Timezone       string         `json:"timezone"`
	AppVersion     string         `json:"app_version"`
	App            string         `json:"app,omitempty"`
}

type backgroundSync struct {
	Enabled     bool   `json:"enabled"`
	MinInterval string `json:"min_interval,omitempty"`
}

// registered is the part of the registration answer the fleet keeps.
type registered struct {
	ID     uint64 `json:"id"`
	Secret string `json:"secret"`
}

// register is POST /v1/devices.
func (c *client) register(ctx context.Context, r registration) (registered, error) {
	var out registered
	_, err := c.do(ctx, http.MethodPost, "/v1/devices", "", r, &out)
	return out, err
}

// poll is POST /v1/feeds/{feed}/poll: what a CMS calls after publishing.
func (c *client) poll(ctx context.Context, editorKey, feed string) error {
	_, err := c.do(ctx, http.MethodPost, "/v1/feeds/"+url.PathEscape(feed)+"/poll", editorKey, nil, nil)
	return err
}

// itemsPage is the answer of GET /v1/feeds/{feed}/items.
type itemsPage struct {
	Feed  string `json:"feed"`
	Items []struct {
		Cursor int64  `json:"cursor"`
		ID     string `json:"id"`
		Title  string `json:"title"`
	} `json:"items"`
	Next      int64 `json:"next"`
	Head      int64 `json:"head"`
	Truncated bool  `json:"truncated"`
}

// items is GET /v1/feeds/{feed}/items?since=&limit= (public).
func (c *client) items(ctx context.Context, feed string, since int64, limit int) (itemsPage, error) {
	var out itemsPage
	path := "/v1/feeds/" + url.PathEscape(feed) + "/items?since=" + strconv.FormatInt(since, 10) +
		"&limit=" + strconv.Itoa(limit)
	_, err := c.do(ctx, http.MethodGet, path, "", nil, &out)
	return out, err
}

// receipt is the body of POST /v1/devices/{id}/receipts.
type receipt struct {
	Source     string           `json:"source,omitempty"` // empty: push
	PushID     string           `json:"push_id,omitempty"`
	ReceivedAt string           `json:"received_at,omitempty"`
	Outcome    string           `json:"outcome"`
	Items      int              `json:"items"`
	Cursors    map[string]int64 `json:"cursors,omitempty"`
}

// postReceipt is POST /v1/devices/{id}/receipts with the device secret.
func (c *client) postReceipt(ctx context.Context, id uint64, secret string, r receipt) error {
	_, err := c.do(ctx, http.MethodPost, "/v1/devices/"+strconv.FormatUint(id, 10)+"/receipts", secret, r, nil)
	return err
}

// healthy waits until GET /healthz answers 200 or ctx ends.
func (c *client) healthy(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		_, err := c.do(ctx, http.MethodGet, "/healthz", "", nil, nil)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s/healthz: %w", c.base, errors.Join(ctx.Err(), err))
		case <-t.C:
		}
	}
}
