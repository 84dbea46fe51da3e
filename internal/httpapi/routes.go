package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/go-chi/httprate"
	"github.com/nudge-dev/nudge/internal/auth"
	"github.com/nudge-dev/nudge/internal/console"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// addRoutes lists the whole API. Keep docs/openapi.yaml in step: a test
// compares the two.
func (s *Server) addRoutes(r chi.Router) {
	r.Get("/healthz", s.handle(s.healthz))
	r.Get("/readyz", s.handle(s.readyz))
	if !s.cfg.MetricsElsewhere {
		r.Method(http.MethodGet, "/metrics", promhttp.HandlerFor(s.deps.Gatherer, promhttp.HandlerOpts{}))
	}

	// The editors' console: a static page that calls the routes below.
	r.Get("/", http.RedirectHandler(console.Path, http.StatusFound).ServeHTTP)
	page := console.Handler().ServeHTTP
	r.Get("/console", page)
	r.Get("/console/*", page)

	r.Route("/v1", func(r chi.Router) {
		r.Use(s.limitBody)
		r.Group(func(r chi.Router) {
			// Device and public routes: a short deadline, 503 when Redis stalls.
			r.Use(deadline(s.cfg.RequestTimeout))
			r.With(s.registerLimit()...).Post("/devices", s.handle(s.registerDevice))
			r.Get("/devices/{id}", s.handle(s.getDevice))
			r.Patch("/devices/{id}", s.handle(s.patchDevice))
			r.Delete("/devices/{id}", s.handle(s.deleteDevice))

			r.Get("/feeds", s.handle(s.listFeeds))
			r.Get("/feeds/{feed}/items", s.handle(s.listItems))
			r.Post("/devices/{id}/receipts", s.handle(s.postReceipt))
		})

		r.Group(func(r chi.Router) {
			r.Use(s.RequireRole(auth.RoleEditor), noteApps, deadline(s.cfg.KeyRequestTimeout))
			r.Get("/apps", s.handle(s.listApps))
			r.Post("/syncs", s.handle(s.createSync))
			r.Get("/syncs", s.handle(s.listSyncs))
			r.Get("/syncs/{id}", s.handle(s.getSync))
			r.Delete("/syncs/{id}", s.handle(s.cancelSync))
			r.Post("/feeds/{feed}/poll", s.handle(s.pollFeed))
			r.Get("/console/overview", s.handle(s.consoleOverview))
			r.Get("/stats/freshness", s.handle(s.getFreshness))
		})

		r.Route("/admin", func(r chi.Router) {
			r.Use(s.RequireRole(auth.RoleAdmin), noteApps, deadline(s.cfg.KeyRequestTimeout))
			r.Put("/feeds/{feed}", s.handle(s.putFeed))
			r.Delete("/feeds/{feed}", s.handle(s.deleteFeed))
			r.Get("/apps", s.handle(s.listAdminApps))
			r.Get("/apps/{app}", s.handle(s.getApp))
			r.Put("/apps/{app}", s.handle(s.putApp))
			r.Delete("/apps/{app}", s.handle(s.deleteApp))
		})
	})
}

// registerLimit rate-limits registrations per client IP (the TCP peer; put
// a trusted proxy's address resolution in front if nudge runs behind one).
func (s *Server) registerLimit() []func(http.Handler) http.Handler {
	if s.cfg.RegisterRateLimit < 0 {
		return nil
	}
	return []func(http.Handler) http.Handler{
		middleware.ClientIPFromRemoteAddr,
		httprate.LimitBy(s.cfg.RegisterRateLimit, s.cfg.RegisterRateWindow,
			func(r *http.Request) (string, error) {
				return httprate.CanonicalizeIP(middleware.GetClientIP(r.Context())), nil
			},
			httprate.WithLimitHandler(s.handle(func(w http.ResponseWriter, r *http.Request) error {
				return &HTTPError{Code: http.StatusTooManyRequests, Kind: "rate_limited",
					Msg: "too many registrations from this address; retry after the Retry-After seconds"}
			}))),
	}
}
