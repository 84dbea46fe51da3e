package pushemu

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v4"
	"github.com/nudge-dev/nudge/internal/startstop"
)

const (
	fcmMaxPayload = 4096
	fcmMaxTTL     = 28 * 24 * time.Hour
	fcmErrorType  = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
)

var ttlPattern = regexp.MustCompile(`^(\d+)(\.\d{1,9})?s$`)

// fcmStatus maps an FCM error code to its HTTP status and google.rpc
// status, as FCM HTTP v1 answers.
var fcmStatus = map[string]struct {
	code   int
	status string
	msg    string
}{
	"UNSPECIFIED_ERROR":      {500, "INTERNAL", "Unspecified error."},
	"INVALID_ARGUMENT":       {400, "INVALID_ARGUMENT", "Request contains an invalid argument."},
	"UNREGISTERED":           {404, "NOT_FOUND", "Requested entity was not found."},
	"SENDER_ID_MISMATCH":     {403, "PERMISSION_DENIED", "SenderId mismatch"},
	"QUOTA_EXCEEDED":         {429, "RESOURCE_EXHAUSTED", "Device message rate exceeded."},
	"UNAVAILABLE":            {503, "UNAVAILABLE", "The service is currently unavailable."},
	"INTERNAL":               {500, "INTERNAL", "Internal error encountered."},
	"THIRD_PARTY_AUTH_ERROR": {401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service"},
}

type fcmServer struct{ e *Emulator }

type rpcStatus struct {
	Error rpcError `json:"error"`
}

type rpcError struct {
	Code    int              `json:"code"`
	Message string           `json:"message"`
	Status  string           `json:"status"`
	Details []map[string]any `json:"details,omitempty"`
}

// fail answers with a google.rpc.Status body. errorCode "" omits the
// FcmError detail (platform-level errors such as auth failures).
func (s *fcmServer) fail(w http.ResponseWriter, code int, status, msg, errorCode string, retryAfter time.Duration, extra ...map[string]any) {
	s.e.rec.reject()
	body := rpcStatus{Error: rpcError{Code: code, Message: msg, Status: status}}
	if errorCode != "" {
		body.Error.Details = append(body.Error.Details, map[string]any{"@type": fcmErrorType, "errorCode": errorCode})
	}
	body.Error.Details = append(body.Error.Details, extra...)
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((retryAfter+time.Second-1)/time.Second)))
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(body)
}

func (s *fcmServer) invalid(w http.ResponseWriter, msg string) {
	s.fail(w, 400, "INVALID_ARGUMENT", msg, "INVALID_ARGUMENT", 0)
}

// fault answers with the injected error f and returns the HTTP status.
func (s *fcmServer) fault(w http.ResponseWriter, f Fault) int {
	if f.ProjectQuota {
		s.fail(w, cmp0(f.Status, 429), "RESOURCE_EXHAUSTED",
			"Quota exceeded for quota metric 'Send requests' and limit 'Send requests per minute' of service 'fcm.googleapis.com' for consumer 'project_number:0'.",
			"", f.RetryAfter, map[string]any{
				"@type":  "type.googleapis.com/google.rpc.ErrorInfo",
				"reason": "RATE_LIMIT_EXCEEDED",
				"domain": "googleapis.com",
				"metadata": map[string]string{
					"quota_metric": "fcm.googleapis.com/send_requests",
					"quota_limit":  "SendsPerMinutePerProject",
					"service":      "fcm.googleapis.com",
				},
			})
		return cmp0(f.Status, 429)
	}
	st, ok := fcmStatus[f.Reason]
	if !ok {
		st = fcmStatus["UNSPECIFIED_ERROR"]
	}
	var extra []map[string]any
	if f.Reason == "QUOTA_EXCEEDED" {
		extra = append(extra, map[string]any{
			"@type": "type.googleapis.com/google.rpc.QuotaFailure",
			"violations": []map[string]string{{
				"subject":     "device",
				"description": "Device message rate exceeded.",
			}},
		})
	}
	s.fail(w, cmp0(f.Status, st.code), st.status, cmpStr(f.Message, st.msg), f.Reason, f.RetryAfter, extra...)
	return cmp0(f.Status, st.code)
}

type fcmRequest struct {
	ValidateOnly bool       `json:"validate_only"`
	Message      fcmMessage `json:"message"`
}

type fcmMessage struct {
	Token        string                     `json:"token"`
	Topic        string                     `json:"topic"`
	Condition    string                     `json:"condition"`
	Data         map[string]json.RawMessage `json:"data"`
	Notification *struct {
		Title string `json:"title"`
		Body  string `json:"body"`
	} `json:"notification"`
	Android *struct {
		CollapseKey  string          `json:"collapse_key"`
		Priority     string          `json:"priority"`
		TTL          string          `json:"ttl"`
		Notification json.RawMessage `json:"notification"`
	} `json:"android"`
	APNS *struct {
		Headers map[string]string `json:"headers"`
		Payload json.RawMessage   `json:"payload"`
	} `json:"apns"`
}

func (s *fcmServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e := s.e
	now := e.now()
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/projects/")
	project, ok2 := strings.CutSuffix(rest, "/messages:send")
	if !ok || !ok2 || r.Method != http.MethodPost {
		s.fail(w, 404, "NOT_FOUND", "Requested entity was not found.", "", 0)
		return
	}
	if !e.checkAccessToken(r.Header.Get("Authorization")) {
		s.fail(w, 401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.", "", 0)
		return
	}
	if !e.projectAllowed(project) {
		s.fail(w, 403, "PERMISSION_DENIED", fmt.Sprintf("Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/%s' (or it may not exist).", project), "", 0)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		s.invalid(w, "Invalid JSON payload received.")
		return
	}
	var req fcmRequest
	if err := json.Unmarshal(body, &req); err != nil {
		s.invalid(w, "Invalid JSON payload received. "+err.Error())
		return
	}
	d, msg := s.validate(&req.Message)
	if msg != "" {
		s.invalid(w, msg)
		return
	}
	d.Body = body

	startstop.Sleep(r.Context(), e.cfg.Latency)
	if f, ok := e.faults.match(FCM, "", d.Token); ok {
		startstop.Sleep(r.Context(), f.Latency)
		if f.Reason != "" || f.ProjectQuota {
			status := s.fault(w, f)
			e.rec.faulted(Rejection{Provider: FCM, Token: d.Token, At: now, Status: status,
				Reason: cmpStr(f.Reason, "RESOURCE_EXHAUSTED"), RetryAfter: f.RetryAfter})
			return
		}
		if f.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(f.RetryAfter/time.Second)))
		}
	}
	ti, known := e.tokens.get(FCM, d.Token)
	if (known && ti.unregistered) || (!known && e.cfg.StrictTokens) {
		s.fail(w, 404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED", 0)
		return
	}
	id := strconv.FormatUint(uint64(now.UnixNano()), 36) + randomHex(4)
	d.ID = "projects/" + project + "/messages/" + id
	d.Project = project
	if !req.ValidateOnly {
		d.At = now
		e.rec.add(d)
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	fmt.Fprintf(w, "{\n  \"name\": %q\n}\n", d.ID)
}

var reservedData = []string{"from", "notification", "message_type"}

// validate checks a message as FCM does and builds the delivery, or
// returns the INVALID_ARGUMENT message.
func (s *fcmServer) validate(m *fcmMessage) (Delivery, string) {
	targets := 0
	for _, t := range []string{m.Token, m.Topic, m.Condition} {
		if t != "" {
			targets++
		}
	}
	if targets != 1 {
		return Delivery{}, "Exactly one of token, topic or condition must be set."
	}
	if m.Token == "" {
		return Delivery{}, "The emulator only delivers to registration tokens."
	}
	if strings.ContainsAny(m.Token, " \t\n/") {
		return Delivery{}, "The registration token is not a valid FCM registration token"
	}
	d := Delivery{Provider: FCM, Token: m.Token, Data: make(map[string]string, len(m.Data))}
	size := 0
	i := 0
	for k, raw := range m.Data {
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			return Delivery{}, fmt.Sprintf("Invalid value at 'message.data[%d].value' (TYPE_STRING), %s", i, raw)
		}
		for _, r := range reservedData {
			if k == r {
				return Delivery{}, fmt.Sprintf("Invalid data payload key: %s", k)
			}
		}
		if strings.HasPrefix(k, "google.") || strings.HasPrefix(k, "gcm.") {
			return Delivery{}, fmt.Sprintf("Invalid data payload key: %s", k)
		}
		d.Data[k] = v
		size += len(k) + len(v)
		i++
	}
	if m.Notification != nil {
		size += len(m.Notification.Title) + len(m.Notification.Body)
		d.Alert = true
	}
	if size > fcmMaxPayload {
		return Delivery{}, fmt.Sprintf("Message is too big: %d bytes of data and notification, the limit is %d.", size, fcmMaxPayload)
	}
	if a := m.Android; a != nil {
		switch strings.ToLower(a.Priority) {
		case "", "normal", "high":
		default:
			return Delivery{}, fmt.Sprintf("Invalid value at 'message.android.priority' (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), %q", a.Priority)
		}
		d.Priority = strings.ToLower(a.Priority)
		d.CollapseID = a.CollapseKey
		if a.TTL != "" {
			mm := ttlPattern.FindStringSubmatch(a.TTL)
			if mm == nil {
				return Delivery{}, fmt.Sprintf("Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), %q", a.TTL)
			}
			secs, err := strconv.ParseInt(mm[1], 10, 64)
			if err != nil || time.Duration(secs)*time.Second > fcmMaxTTL {
				return Delivery{}, "Android TTL must be between 0 and 2419200 seconds (28 days)."
			}
			d.TTL = a.TTL
		}
		if len(a.Notification) > 0 && string(a.Notification) != "null" {
			d.Alert = true
		}
	}
	if a := m.APNS; a != nil {
		if msg := s.validateAPNS(&d, a.Headers, a.Payload, m.Notification != nil); msg != "" {
			return Delivery{}, msg
		}
	}
	return d, ""
}

// validateAPNS applies the APNs rules FCM enforces (or that APNs enforces
// behind it) to the apns block of an FCM message.
func (s *fcmServer) validateAPNS(d *Delivery, headers map[string]string, payload json.RawMessage, notification bool) string {
	prio := headers["apns-priority"]
	pushType := headers["apns-push-type"]
	d.PushType, d.Expiration = pushType, headers["apns-expiration"]
	d.CollapseID = cmpStr(headers["apns-collapse-id"], d.CollapseID)
	if prio != "" && prio != "1" && prio != "5" && prio != "10" {
		return "Invalid APNs priority: " + prio
	}
	if pushType != "" && !apnsPushTypes[pushType] {
		return "Invalid APNs push type: " + pushType
	}
	if len(headers["apns-collapse-id"]) > apnsMaxCollapse {
		return "apns-collapse-id must be at most 64 bytes."
	}
	if len(payload) > apnsMaxPayload {
		return fmt.Sprintf("APNs payload is too big: %d bytes, the limit is %d.", len(payload), apnsMaxPayload)
	}
	var aps map[string]any
	if len(payload) > 0 {
		var p struct {
			Aps map[string]any `json:"aps"`
		}
		if err := json.Unmarshal(payload, &p); err != nil {
			return "Invalid APNs payload."
		}
		aps = p.Aps
	}
	d.Aps = aps
	hasAlert := notification || aps["alert"] != nil
	if aps["alert"] != nil {
		d.Alert = true
	}
	if pushType == "background" {
		bp := prio
		if bp == "" {
			bp = "10"
		}
		if r := checkBackground(pushType, bp, aps); r != "" {
			return "Invalid background APNs message (" + r + "): a background push needs apns-priority 5, content-available 1 and no alert, sound or badge."
		}
	}
	// A data message for iOS at priority 10 shows nothing: APNs rejects
	// it, so FCM answers INVALID_ARGUMENT.
	if prio == "10" && !hasAlert {
		return "An iOS data message must use apns-priority 5: priority 10 requires an alert."
	}
	d.Priority = cmpStr(prio, d.Priority)
	return ""
}

func cmpStr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// checkAccessToken accepts OAuth access tokens issued by the fake token
// endpoint and self-signed service-account JWTs.
func (e *Emulator) checkAccessToken(authz string) bool {
	raw, ok := strings.CutPrefix(authz, "Bearer ")
	if !ok || raw == "" {
		return false
	}
	e.auth.mu.Lock()
	_, ok = e.auth.access[raw]
	e.auth.mu.Unlock()
	if ok {
		return true
	}
	if e.verifySAJWT(raw) != nil {
		return false
	}
	e.auth.mu.Lock()
	e.auth.access[raw] = struct{}{}
	e.auth.mu.Unlock()
	return true
}

func (e *Emulator) verifySAJWT(raw string) error {
	e.auth.mu.Lock()
	keys := slices.Clone(e.auth.saKeys)
	e.auth.mu.Unlock()
	var err error
	for _, k := range keys {
		if _, err = jwt.Parse(raw, func(t *jwt.Token) (any, error) {
			return k, nil
		}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithoutClaimsValidation()); err == nil {
			return nil
		}
	}
	return fmt.Errorf("verify service account jwt: %w", err)
}

// serveToken is the OAuth2 token endpoint for the JWT-bearer grant that
// Google's auth libraries use with a service account.
func (e *Emulator) serveToken(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if r.Method != http.MethodPost {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	if err := r.ParseForm(); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":"invalid_request"}`)
		return
	}
	if r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":"unsupported_grant_type"}`)
		return
	}
	if err := e.verifySAJWT(r.PostForm.Get("assertion")); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":"invalid_grant","error_description":"Invalid JWT Signature."}`)
		return
	}
	tok := "emu." + randomHex(24)
	e.auth.mu.Lock()
	e.auth.access[tok] = struct{}{}
	e.auth.mu.Unlock()
	json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 3599})
}
