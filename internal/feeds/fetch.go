package feeds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// ErrTooLarge is returned for a feed body over the configured cap.
var ErrTooLarge = errors.New("feed body too large")

// ErrTooManyRedirects is returned when a feed redirects more often than
// the configured limit (a redirect loop, say).
var ErrTooManyRedirects = errors.New("too many redirects")

// StatusError is an HTTP status other than 200 and 304.
type StatusError struct {
	Code       int
	RetryAfter time.Duration // from a Retry-After header, 0 if none
}

// Error names the status.
func (e *StatusError) Error() string {
	return "http status " + strconv.Itoa(e.Code) + " " + http.StatusText(e.Code)
}

// fetchResult is one successful fetch (200 or 304).
type fetchResult struct {
	Status       int
	Body         []byte
	ContentType  string
	ETag         string
	LastModified string
	URL          string // after redirects
}

// fetcher does conditional GETs with a timeout, a body cap, a redirect limit
// and a User-Agent.
type fetcher struct {
	client    *http.Client
	userAgent string
	timeout   time.Duration
	maxBody   int64
}

func newFetcher(base *http.Client, userAgent string, timeout time.Duration, maxBody int64, maxRedirects int) *fetcher {
	c := *base // a copy: the caller's CheckRedirect is not ours to change
	// The caller's check (the egress policy's) still applies after the limit.
	policy := base.CheckRedirect
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) > maxRedirects {
			return fmt.Errorf("after %d redirects: %w", maxRedirects, ErrTooManyRedirects)
		}
		if policy != nil {
			return policy(req, via)
		}
		return nil
	}
	return &fetcher{client: &c, userAgent: userAgent, timeout: timeout, maxBody: maxBody}
}

// fetch does one conditional GET of url. authorization, when not empty, is
// sent as the Authorization header; net/http drops it on a redirect to
// another host.
func (f *fetcher) fetch(ctx context.Context, url, authorization, etag, lastModified string, now time.Time) (fetchResult, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fetchResult{}, fmt.Errorf("fetch feed %s: %w", url, err)
	}
	req.Header.Set("User-Agent", f.userAgent)
	req.Header.Set("Accept", "application/rss+xml, application/atom+xml, application/feed+json, application/json;q=0.9, application/xml;q=0.9, text/xml;q=0.8, */*;q=0.5")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	if lastModified != "" {
		req.Header.Set("If-Modified-Since", lastModified)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return fetchResult{}, fmt.Errorf("fetch feed %s: %w", url, err)
	}
	defer resp.Body.Close()
	r := fetchResult{
		Status:       resp.StatusCode,
		ContentType:  resp.Header.Get("Content-Type"),
		ETag:         resp.Header.Get("ETag"),
		LastModified: resp.Header.Get("Last-Modified"),
		URL:          resp.Request.URL.String(),
	}
	switch resp.StatusCode {
	case http.StatusNotModified:
		return r, nil
	case http.StatusOK:
	default:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return r, fmt.Errorf("fetch feed %s: %w", url, &StatusError{Code: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), now)})
	}
	if resp.ContentLength > f.maxBody {
		return r, fmt.Errorf("fetch feed %s: %d bytes announced, cap %d: %w", url, resp.ContentLength, f.maxBody, ErrTooLarge)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, f.maxBody+1))
	if err != nil {
		return r, fmt.Errorf("fetch feed %s: read body: %w", url, err)
	}
	if int64(len(body)) > f.maxBody {
		return r, fmt.Errorf("fetch feed %s: over %d bytes: %w", url, f.maxBody, ErrTooLarge)
	}
	r.Body = body
	return r, nil
}

func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
