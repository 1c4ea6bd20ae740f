package main

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/telegauge/telegauge/dashboard"
	"github.com/telegauge/telegauge/ingest/store"
	"github.com/telegauge/telegauge/internal/secret"
	"github.com/telegauge/telegauge/web"
)

// adminStore is the admin API's web.AdminStore over the node's database:
// what `telegauge devices` and `telegauge users` do, from the dashboard.
// Each change is applied by the running server (the credentials watcher,
// asked to look at once) before the method returns.
type adminStore struct {
	n   *node
	log *slog.Logger
}

var _ web.AdminStore = adminStore{}

// adminStore returns the admin API's store, or nil (no admin API) without
// a database.
func (n *node) adminStore(log *slog.Logger) web.AdminStore {
	if n.sql == nil {
		return nil
	}
	return adminStore{n: n, log: log.With("component", "admin")}
}

// credentialsApplyWait bounds how long a change through the admin API waits
// for the server to apply it. Past it the change is saved all the same,
// and the watcher keeps trying.
const credentialsApplyWait = 10 * time.Second

// apply has the running server apply every credential change made so far,
// and waits until it has.
func (a adminStore) apply(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), credentialsApplyWait)
	defer cancel()
	v, err := a.n.sql.CredentialsVersion(ctx)
	if err == nil {
		err = a.n.applied.wait(ctx, v)
	}
	if err != nil {
		a.log.Warn("a credential change is saved but not applied yet; the server keeps trying", "err", err)
	}
}

// ListDevices lists the devices on record with their credential state,
// and the ones seen since the last save of device activity; first and last
// seen times are the fresher of the database's and the aggregator's.
func (a adminStore) ListDevices(ctx context.Context) ([]web.DeviceCredential, error) {
	recs, err := a.n.sql.Devices(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]web.DeviceCredential, 0, len(recs))
	at := make(map[string]int, len(recs))
	for _, r := range recs {
		at[r.ID] = len(out)
		out = append(out, web.DeviceCredential{ID: r.ID, Credential: credentialState(r.TokenHash), FirstSeenMs: r.FirstSeenMs, LastSeenMs: r.LastSeenMs})
	}
	for _, d := range a.n.agg.Devices() {
		i, ok := at[d.ID]
		if !ok {
			out = append(out, web.DeviceCredential{ID: d.ID, Credential: web.CredentialNone, FirstSeenMs: d.FirstSeenMs, LastSeenMs: d.LastSeenMs})
			continue
		}
		if d.FirstSeenMs > 0 && (out[i].FirstSeenMs == 0 || d.FirstSeenMs < out[i].FirstSeenMs) {
			out[i].FirstSeenMs = d.FirstSeenMs
		}
		out[i].LastSeenMs = max(out[i].LastSeenMs, d.LastSeenMs)
	}
	slices.SortFunc(out, func(x, y web.DeviceCredential) int { return strings.Compare(x.ID, y.ID) })
	return out, nil
}

// IssueDevice gives device id a new token (as `telegauge devices add`).
func (a adminStore) IssueDevice(ctx context.Context, id string) (web.IssuedDevice, error) {
	toks, err := a.n.sql.DeviceTokens(ctx)
	if err != nil {
		return web.IssuedDevice{}, err
	}
	token, err := issueDeviceToken(ctx, a.n.sql, id)
	if err != nil {
		return web.IssuedDevice{}, err
	}
	a.apply(ctx)
	old := toks[id]
	return web.IssuedDevice{
		Token:    token,
		Replaced: old != "" && old != secret.Revoked,
		Topic:    a.n.cfg.Prefix + "/" + id,
		Brokers:  a.n.mqttURLs(),
	}, nil
}

// mqttURLs are the broker's listeners as URLs, for the device hint.
func (n *node) mqttURLs() []string {
	if n.upstream != nil {
		return []string{n.upstream.URL()} // external broker mode (serve_upstream.go)
	}
	urls := []string{"mqtt://" + n.broker.Addr()}
	if addr := n.broker.TLSAddr(); addr != "" {
		urls = append(urls, "mqtts://"+addr)
	}
	if n.cfg.MQTTWSAddr != "" {
		urls = append(urls, "ws://"+n.cfg.MQTTWSAddr+"/mqtt")
	}
	return urls
}

// RevokeDevice revokes device id's token (as `telegauge devices revoke`).
func (a adminStore) RevokeDevice(ctx context.Context, id string) error {
	if err := a.n.sql.RevokeDevice(ctx, id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return dashboard.Errorf(dashboard.CodeNotFound, "device %s holds no credential", id)
		}
		return err
	}
	a.apply(ctx)
	return nil
}

// ListUsers lists the operators.
func (a adminStore) ListUsers(ctx context.Context) ([]web.Operator, error) {
	users, err := a.n.sql.ListUsers(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]web.Operator, len(users))
	for i, u := range users {
		out[i] = web.Operator{Name: u.Name, Role: web.Role(u.Role), CreatedMs: u.CreatedMs}
	}
	return out, nil
}

// IssueUser creates or replaces user name with a new token (as `telegauge
// users add`).
func (a adminStore) IssueUser(ctx context.Context, name string, role web.Role) (string, bool, error) {
	token, replaced, err := issueUserToken(ctx, a.n.sql, name, string(role))
	if err != nil {
		return "", false, err
	}
	a.apply(ctx)
	return token, replaced, nil
}

// RemoveUser removes user name (as `telegauge users remove`).
func (a adminStore) RemoveUser(ctx context.Context, name string) error {
	if err := a.n.sql.DeleteUser(ctx, name); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return dashboard.Errorf(dashboard.CodeNotFound, "no user %s", name)
		}
		return err
	}
	a.apply(ctx)
	return nil
}
