package main

import (
	"log/slog"
	"strings"
	"time"

	"github.com/telegauge/telegauge/dashboard"
	"github.com/telegauge/telegauge/ingest"
	"github.com/telegauge/telegauge/ingest/bus"
)

// ClusterFlags are serve's cluster mode flags (ingest/bus).
type ClusterFlags struct {
	NATS               string        `name:"nats" help:"Join a cluster through NATS (nats://host:4222, comma-separated for several servers): every node's dashboards see every node's devices. Core NATS only, no JetStream." placeholder:"URL"`
	NodeID             string        `name:"node-id" help:"This node's id in the cluster, 1-64 of A-Z a-z 0-9 _ - (default: host name and a random suffix)." placeholder:"ID"`
	ClusterNodeTimeout time.Duration `name:"cluster-node-timeout" default:"5s" help:"A node silent this long on NATS has its devices shown offline by the others; heartbeats go out every fifth of it."`
}

// sharedHistory reports whether the history database is one the nodes
// share (PostgreSQL): then only a reading's origin node writes it.
func (c *ServeCmd) sharedHistory() bool {
	return strings.HasPrefix(c.DB, "postgres://") || strings.HasPrefix(c.DB, "postgresql://")
}

// buildBus creates the cluster bus when --nats is set. Remote readings go
// to the aggregator and the hub; presence changes are cluster-wide.
func (n *node) buildBus(log *slog.Logger) error {
	c := n.cfg
	if c.NATS == "" {
		return nil
	}
	var err error
	n.bus, err = bus.New(bus.Config{
		URL:           c.NATS,
		NodeID:        c.NodeID,
		NodeTimeout:   c.ClusterNodeTimeout,
		PersistRemote: !c.sharedHistory(),
		Apply:         n.agg,
		Live:          func(rs []ingest.Reading) { n.hub.Publish(rs) },
		Presence:      n.applyPresence,
		Registerer:    n.reg,
	}, log)
	if err != nil {
		return err
	}
	log.Info("cluster mode", "node", n.bus.NodeID(), "nats", c.NATS, "sharedHistory", c.sharedHistory())
	return nil
}

// applyPresence is a device's (cluster-wide, in cluster mode) presence
// change: the device list and the live viewers.
func (n *node) applyPresence(device string, online bool, at time.Time) {
	n.agg.SetPresence(device, online, at)
	n.hub.PublishPresence(device, online, at)
}

// onPresence is the broker's presence callback: a session on this node.
func (n *node) onPresence(device string, online bool, at time.Time) {
	if n.bus != nil {
		n.bus.LocalPresence(device, online, at)
		return
	}
	n.applyPresence(device, online, at)
}

// liveSource is what the hub drains each frame: the aggregator, whose
// readings also go to the other nodes in cluster mode.
func (n *node) liveSource() dashboard.LiveSource {
	if n.cfg.NATS == "" {
		return n.agg
	}
	return clusterSource{n}
}

// clusterSource hands the readings this node accepted to the bus as the
// hub takes them: one batch per hub frame (at most every few ms under
// load), so the bus needs no timer of its own. Remote readings never pass
// here (they reach the hub through Hub.Publish), so nothing is echoed.
type clusterSource struct{ n *node }

func (s clusterSource) DrainReadings(dst []ingest.Reading) ([]ingest.Reading, *ingest.LiveGap) {
	from := len(dst)
	dst, gap := s.n.agg.DrainReadings(dst)
	s.n.bus.Send(dst[from:])
	return dst, gap
}

// readyInfo is /readyz's cluster field. A node cut off from NATS stays
// ready: it still serves its own devices and viewers, and taking every
// node out of a load balancer because NATS is down would stop all of
// them.
func (n *node) readyInfo() map[string]string {
	if n.bus == nil {
		return nil
	}
	return map[string]string{"cluster": n.bus.Status(), "node": n.bus.NodeID()}
}
