package web

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/ingest/store"
)

// TestSessionsInTheStore: with a session store (a real SQLite database), a
// login outlives the server that made it and works on every server of the
// database; a logout on one ends it on the others (their streams with it)
// when they next sync; a store's session of a removed user, or one expired
// by the time it is found, is not revived; unknown cookies count against
// the address's limit.
func TestSessionsInTheStore(t *testing.T) {
	ann, bob := newOperator(t, "ann", RoleAdmin), newOperator(t, "bob", RoleViewer)
	db, err := store.Open(context.Background(), store.SQLConfig{URL: filepath.Join(t.TempDir(), "telegauge.db")}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	withDB := withWeb(func(c *Config) {
		c.Auth.Store = db
		c.Auth.SessionIdle, c.Auth.SessionMaxAge = time.Hour, 3*time.Hour
		c.Auth.LoginBurst = 3
	})
	me := func(ts *testServer, ck *http.Cookie) int {
		t.Helper()
		resp, _ := ts.do(t, request{path: "/api/v1/me", header: ts.withCookie(ck)})
		return resp.StatusCode
	}

	a := newTestServer(t, withOperators(ann, bob), withDB)
	b := newTestServer(t, withOperators(ann, bob), withDB)
	ck := a.login(t, "ann", ann.token)
	require.Equal(t, 200, me(a, ck))
	require.Equal(t, 200, me(b, ck), "another server on the database")
	restarted := newTestServer(t, withOperators(ann, bob), withDB)
	require.Equal(t, 200, me(restarted, ck), "a new process")

	// A logout on a: b and the restarted server drop the session when the
	// credentials version moves (cmd's watcher then calls SetAccess).
	bSSE := openSSE(t, b, "/api/v1/stream?series=dev1/%23", b.withCookie(ck))
	bSSE.open(t)
	resp, body := a.do(t, request{method: http.MethodPost, path: "/api/v1/logout", header: a.withCookie(ck)})
	require.Equal(t, http.StatusNoContent, resp.StatusCode, "%s", body)
	require.Equal(t, 401, me(a, ck))
	b.srv.SetAccess(accessOf(ann, bob))
	restarted.srv.SetAccess(accessOf(ann, bob))
	require.ErrorIs(t, bSSE.waitEnd(t), io.EOF)
	require.Equal(t, 401, me(b, ck))
	require.Equal(t, 401, me(restarted, ck))
	require.Equal(t, 401, me(newTestServer(t, withOperators(ann, bob), withDB), ck))

	// A session in use has its use recorded now and then, so a restart
	// does not find it idle; one unused for longer than SessionIdle, or
	// whose user is gone, stays ended.
	used := a.login(t, "ann", ann.token)
	unused := a.login(t, "bob", bob.token)
	a.advance(50 * time.Minute)
	require.Equal(t, 200, me(a, used))
	later := newTestServer(t, withOperators(ann, bob), withDB)
	later.advance(90 * time.Minute)
	require.Equal(t, 200, me(later, used), "used 40 minutes ago")
	require.Equal(t, 401, me(later, unused), "unused for 90 minutes")
	withoutAnn := newTestServer(t, withOperators(bob), withDB)
	for range 5 { // past the limit of 3: an ended session is no guess
		require.Equal(t, 401, me(withoutAnn, used), "ann was removed")
	}

	// Cookies nobody holds cost a database read each, so they count
	// against the address's login limit: three, then 429.
	bogus := &http.Cookie{Name: "telegauge_session", Value: "nobody-has-this"}
	fresh := newTestServer(t, withOperators(ann, bob), withDB)
	for range 3 {
		resp, body := fresh.do(t, request{path: "/api/v1/me", header: fresh.withCookie(bogus)})
		requireError(t, http.StatusUnauthorized, resp, body)
	}
	resp, body = fresh.do(t, request{path: "/api/v1/me", header: fresh.withCookie(bogus)})
	requireError(t, http.StatusTooManyRequests, resp, body)
	require.NotEmpty(t, resp.Header.Get("Retry-After"))
}
