package bus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telegauge/telegauge/ingest"
)

// Applier is where remote readings go: the aggregator.
type Applier interface {
	// ApplyRemote folds readings another node accepted; see
	// ingest.Aggregator.ApplyRemote.
	ApplyRemote(rs []ingest.Reading, atMs int64, persist bool) ingest.RemoteStats
}

// Config configures a Bus. Zero values mean the documented defaults.
type Config struct {
	// URL is the NATS server or servers (comma-separated nats:// URLs).
	// Required.
	URL string `yaml:"url"`
	// NodeID names this node on the bus: 1-64 of A-Z a-z 0-9 _ - (a NATS
	// subject token). Empty means DefaultNodeID().
	NodeID string `yaml:"node-id"`
	// Subject is the first token of every subject. Empty means "telegauge".
	Subject string `yaml:"subject"`
	// PersistRemote says whether remote readings go into this node's
	// history too: true when every node keeps a history of its own
	// (SQLite), false when the nodes share one (PostgreSQL), which only
	// the origin node writes to. See ingest.Aggregator.ApplyRemote.
	PersistRemote bool `yaml:"persist-remote"`
	// NodeTimeout is how long a node may stay silent (no heartbeat, no
	// readings) before the others withdraw its devices' presence. Zero
	// means 5 s; heartbeats go out every fifth of it.
	NodeTimeout time.Duration `yaml:"node-timeout"`
	// ReconnectBufBytes is how much nats.go buffers while the connection
	// is down; publishes beyond it are dropped and counted. Zero means
	// 8 MiB (about 350,000 readings of short series ids).
	ReconnectBufBytes int `yaml:"reconnect-buf-bytes"`
	// MaxPendingReadings bounds the readings waiting for the publisher
	// goroutine; beyond it new ones are dropped and counted. Zero means
	// 1,048,576.
	MaxPendingReadings int `yaml:"max-pending-readings"`
	// MaxMessageBytes caps one readings message (NATS refuses messages
	// over the server's max_payload, 1 MiB by default). Zero means 256 KiB.
	MaxMessageBytes int `yaml:"max-message-bytes"`

	// Apply receives remote readings. Required.
	Apply Applier `yaml:"-"`
	// Live receives remote readings for the live hub (Hub.Publish); it is
	// called after Apply and must not block. May be nil.
	Live func([]ingest.Reading) `yaml:"-"`
	// Presence is told when a device's cluster-wide presence changes: it
	// is online while any node has a session for it. It is called with
	// the bus's lock held and must not block or call the Bus. May be nil.
	Presence func(device string, online bool, at time.Time) `yaml:"-"`
	// Clock is the time source; nil means the real clock.
	Clock clockwork.Clock `yaml:"-"`
	// Registerer receives the bus's metrics; nil means none.
	Registerer prometheus.Registerer `yaml:"-"`
}

// ValidNodeID reports whether id can name a node: 1-64 of A-Z a-z 0-9 _ -.
func ValidNodeID(id string) bool {
	return ingest.ValidName(id) && !strings.Contains(id, ".")
}

// DefaultNodeID is the host name (dots and other characters a subject
// token cannot hold replaced by '-') and a random suffix, so that two
// processes on one host, or a restarted one, are different nodes.
func DefaultNodeID() string {
	host, _ := os.Hostname()
	var b strings.Builder
	for _, c := range host {
		if c < 128 && c != '.' && ingest.ValidName(string(c)) {
			b.WriteRune(c)
		} else {
			b.WriteByte('-')
		}
	}
	h := b.String()
	if len(h) > 48 {
		h = h[:48]
	}
	if h == "" {
		h = "node"
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	return h + "-" + hex.EncodeToString(rnd[:])
}

// Bus connects the node to the others through core NATS (no JetStream):
// it publishes the readings this node accepted and its devices' presence,
// and applies the other nodes' readings and presence locally.
//
// Subjects, with <node> the publishing node's id:
//
//	<subject>.readings.<node>   a batch of readings (codec.go)
//	<subject>.presence.<node>   presence changes, or the node's full set
//	<subject>.heartbeat.<node>  "I am here", every NodeTimeout/5; "leaving" at shutdown
//	<subject>.sync.<node>       a node that (re)joined asks for everyone's full presence
//
// All methods are safe for concurrent use; Send and LocalPresence never
// block.
type Bus struct {
	cfg Config
	log *slog.Logger
	met *metrics

	nc        atomic.Pointer[nats.Conn]
	connected atomic.Bool
	downSince atomic.Int64 // Unix ms the connection was lost; 0 while connected
	wake      chan struct{}

	outMu  sync.Mutex       // guards out and outPre
	out    []ingest.Reading // accepted readings waiting to be published
	outPre []presenceChange // local presence changes waiting to be published
	// wantSnapshot asks the run loop to publish this node's full presence;
	// wantSync to ask the others for theirs.
	wantSnapshot, wantSync atomic.Bool

	mu    sync.Mutex       // guards local, peers and count; Config.Presence is called under it
	local map[string]bool  // devices with a session on this node
	peers map[string]*peer // other live nodes, by id
	count map[string]int   // nodes (this one included) where a device is online
}

// peer is another node as this one knows it.
type peer struct {
	lastMs  int64           // when it was last heard from
	devices map[string]bool // its devices with a session
}

// presenceChange is one device going online or offline.
type presenceChange struct {
	Device string `json:"d"`
	Online bool   `json:"on"`
	TimeMs int64  `json:"t"`
}

// presenceMsg is a presence message; Full means Changes is the node's
// whole set of online devices, replacing what was known.
type presenceMsg struct {
	Full    bool             `json:"full,omitempty"`
	Changes []presenceChange `json:"changes"`
}

// heartbeatMsg is a heartbeat; Leaving says the node is shutting down.
type heartbeatMsg struct {
	Leaving bool `json:"leaving,omitempty"`
}

// New validates cfg and returns a Bus; Run connects it.
func New(cfg Config, log *slog.Logger) (*Bus, error) {
	if cfg.URL == "" {
		return nil, errors.New("bus: Config.URL is required")
	}
	if cfg.Apply == nil {
		return nil, errors.New("bus: Config.Apply is required")
	}
	if cfg.NodeID == "" {
		cfg.NodeID = DefaultNodeID()
	}
	if !ValidNodeID(cfg.NodeID) {
		return nil, fmt.Errorf("bus: node id %q: want 1-64 of A-Z a-z 0-9 _ -", cfg.NodeID)
	}
	if cfg.Subject == "" {
		cfg.Subject = "telegauge"
	}
	if strings.ContainsAny(cfg.Subject, ".*> \t\r\n") {
		return nil, fmt.Errorf("bus: subject %q must be one token", cfg.Subject)
	}
	if cfg.NodeTimeout <= 0 {
		cfg.NodeTimeout = 5 * time.Second
	}
	if cfg.ReconnectBufBytes <= 0 {
		cfg.ReconnectBufBytes = 8 << 20
	}
	if cfg.MaxPendingReadings <= 0 {
		cfg.MaxPendingReadings = 1 << 20
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = 256 << 10
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Bus{
		cfg:   cfg,
		log:   log.With("component", "bus", "node", cfg.NodeID),
		wake:  make(chan struct{}, 1),
		local: make(map[string]bool),
		peers: make(map[string]*peer),
		count: make(map[string]int),
	}
	b.downSince.Store(cfg.Clock.Now().UnixMilli())
	b.met = newMetrics(b)
	if cfg.Registerer != nil {
		if err := b.met.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("bus: register metrics: %w", err)
		}
	}
	return b, nil
}

// NodeID returns this node's id on the bus.
func (b *Bus) NodeID() string { return b.cfg.NodeID }

// Connected reports whether the NATS connection is up.
func (b *Bus) Connected() bool { return b.connected.Load() }

// Status describes the connection for /readyz: "connected", or since when
// it has been down.
func (b *Bus) Status() string {
	if b.connected.Load() {
		return "nats connected"
	}
	since := time.UnixMilli(b.downSince.Load())
	return fmt.Sprintf("nats unreachable since %s: serving this node's devices only; other nodes' readings are not seen live", since.UTC().Format(time.RFC3339))
}

// Nodes returns the ids of the other nodes heard from within NodeTimeout.
func (b *Bus) Nodes() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, 0, len(b.peers))
	for id := range b.peers {
		out = append(out, id)
	}
	return out
}

func (b *Bus) subject(kind string) string {
	return b.cfg.Subject + "." + kind + "." + b.cfg.NodeID
}

// Send queues readings this node accepted from its own devices for the
// other nodes. It copies them and never blocks; beyond MaxPendingReadings
// they are dropped and counted.
func (b *Bus) Send(rs []ingest.Reading) {
	if len(rs) == 0 {
		return
	}
	b.outMu.Lock()
	room := b.cfg.MaxPendingReadings - len(b.out)
	n := min(room, len(rs))
	first := len(b.out) == 0
	b.out = append(b.out, rs[:max(n, 0)]...)
	b.outMu.Unlock()
	if n < len(rs) {
		b.met.dropped.WithLabelValues("queue").Add(float64(len(rs) - max(n, 0)))
	}
	if first {
		b.signal()
	}
}

// LocalPresence records that a device's session on this node started or
// ended, tells Config.Presence if that changes its cluster-wide presence,
// and queues the change for the other nodes. It never blocks.
func (b *Bus) LocalPresence(device string, online bool, at time.Time) {
	if !ingest.ValidName(device) {
		return
	}
	atMs := at.UnixMilli()
	b.mu.Lock()
	if b.local[device] != online {
		if online {
			b.local[device] = true
		} else {
			delete(b.local, device)
		}
		b.bumpLocked(device, online, atMs)
	}
	b.mu.Unlock()
	b.outMu.Lock()
	first := len(b.out) == 0 && len(b.outPre) == 0
	b.outPre = append(b.outPre, presenceChange{Device: device, Online: online, TimeMs: atMs})
	b.outMu.Unlock()
	if first {
		b.signal()
	}
}

// bumpLocked adds (online) or removes one node's session for the device
// and tells Config.Presence when the device goes from no node to some or
// back. The caller must hold b.mu.
func (b *Bus) bumpLocked(device string, online bool, atMs int64) {
	n := b.count[device]
	if online {
		n++
	} else {
		n--
	}
	if n <= 0 {
		delete(b.count, device)
	} else {
		b.count[device] = n
	}
	if (online && n == 1) || (!online && n <= 0) {
		if b.cfg.Presence != nil {
			b.cfg.Presence(device, online, time.UnixMilli(atMs))
		}
	}
}

func (b *Bus) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// Run connects to NATS and exchanges readings and presence until ctx ends,
// then tells the others this node is leaving and closes the connection.
// A NATS server that cannot be reached is not an error: the connection is
// retried for as long as Run runs, and the node serves its own devices
// meanwhile.
func (b *Bus) Run(ctx context.Context) error {
	closed := make(chan struct{})
	beat := b.cfg.NodeTimeout / 5
	opts := []nats.Option{
		nats.Name("telegauge " + b.cfg.NodeID),
		nats.NoEcho(), // never our own messages back
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(max(beat/2, 50*time.Millisecond)),
		nats.ReconnectBufSize(b.cfg.ReconnectBufBytes),
		nats.PingInterval(max(beat, time.Second)),
		nats.MaxPingsOutstanding(3),
		nats.ConnectHandler(func(*nats.Conn) { b.up("connected") }),
		nats.ReconnectHandler(func(*nats.Conn) { b.up("reconnected") }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { b.down(err) }),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				b.met.dropped.WithLabelValues("slow_consumer").Inc()
			}
			b.log.Warn("nats error", "err", err)
		}),
	}
	nc, err := nats.Connect(b.cfg.URL, opts...)
	if err != nil {
		return fmt.Errorf("connect to nats %s: %w", b.cfg.URL, err)
	}
	b.nc.Store(nc)
	var rdBuf []ingest.Reading
	in := make(interner)
	subs := []struct {
		kind string
		fn   func(node string, m *nats.Msg)
	}{
		{"readings", func(node string, m *nats.Msg) { rdBuf = b.onReadings(node, m.Data, rdBuf[:0], &in) }},
		{"presence", b.onPresence},
		{"heartbeat", b.onHeartbeat},
		{"sync", func(node string, _ *nats.Msg) { b.heard(node); b.wantSnapshot.Store(true); b.signal() }},
	}
	for _, s := range subs {
		prefix := b.cfg.Subject + "." + s.kind + "."
		fn := s.fn
		if _, err := nc.Subscribe(prefix+"*", func(m *nats.Msg) {
			node := strings.TrimPrefix(m.Subject, prefix)
			if node == b.cfg.NodeID || !ValidNodeID(node) {
				return
			}
			fn(node, m)
		}); err != nil {
			nc.Close()
			return fmt.Errorf("subscribe to %s*: %w", prefix, err)
		}
	}
	// Ask everyone for their presence, and give ours (also after every
	// reconnect, and whenever a node is new to us: see up and heard).
	b.wantSync.Store(true)
	b.wantSnapshot.Store(true)

	tick := b.cfg.Clock.NewTicker(beat)
	defer tick.Stop()
	var enc encoder
	for {
		select {
		case <-b.wake:
			b.publishPending(nc, &enc)
		case <-tick.Chan():
			b.publishHeartbeat(nc, false)
			b.expire()
			b.publishPending(nc, &enc)
		case <-ctx.Done():
			b.publishPending(nc, &enc)
			b.publishHeartbeat(nc, true)
			// Drain flushes what we published, then lets the subscription
			// callbacks finish what they hold before it closes.
			if err := nc.Drain(); err != nil {
				nc.Close()
			}
			select {
			case <-closed:
			case <-time.After(5 * time.Second):
				nc.Close()
				<-closed
			}
			b.connected.Store(false)
			return nil
		}
	}
}

// up records that the connection is (back) up and asks for the others'
// presence: while it was down this node may have expired them, and they
// it.
func (b *Bus) up(what string) {
	b.connected.Store(true)
	b.downSince.Store(0)
	b.log.Info("nats "+what, "url", b.cfg.URL)
	if what == "reconnected" {
		b.met.reconnects.Inc()
	}
	b.wantSync.Store(true)
	b.wantSnapshot.Store(true)
	b.signal()
}

func (b *Bus) down(err error) {
	if !b.connected.Swap(false) {
		return
	}
	b.downSince.Store(b.cfg.Clock.Now().UnixMilli())
	if err != nil {
		b.log.Warn("nats connection lost; reconnecting (this node keeps serving its own devices)", "err", err)
	}
}

func (b *Bus) publishHeartbeat(nc *nats.Conn, leaving bool) {
	data, _ := json.Marshal(heartbeatMsg{Leaving: leaving})
	if leaving {
		// An empty full set withdraws our devices at once.
		pdata, _ := json.Marshal(presenceMsg{Full: true, Changes: []presenceChange{}})
		_ = nc.Publish(b.subject("presence"), pdata)
	}
	_ = nc.Publish(b.subject("heartbeat"), data)
}

// publishPending publishes the queued presence changes (or a full
// snapshot) and readings. enc is the run loop's reusable encoder.
func (b *Bus) publishPending(nc *nats.Conn, enc *encoder) {
	b.outMu.Lock()
	rs, pres := b.out, b.outPre
	b.out, b.outPre = nil, nil
	b.outMu.Unlock()
	if b.wantSync.Swap(false) {
		b.publish(nc, "sync", nil)
	}
	if b.wantSnapshot.Swap(false) {
		b.mu.Lock()
		snap := presenceMsg{Full: true, Changes: make([]presenceChange, 0, len(b.local))}
		nowMs := b.cfg.Clock.Now().UnixMilli()
		for d := range b.local {
			snap.Changes = append(snap.Changes, presenceChange{Device: d, Online: true, TimeMs: nowMs})
		}
		b.mu.Unlock()
		data, _ := json.Marshal(snap)
		b.publish(nc, "presence", data)
		pres = nil // the snapshot includes them
	}
	if len(pres) > 0 {
		data, _ := json.Marshal(presenceMsg{Changes: pres})
		b.publish(nc, "presence", data)
	}
	for len(rs) > 0 {
		enc.reset()
		n := 0
		// A reading takes at most 1+129+10+8 bytes.
		for n < len(rs) && len(enc.buf) < b.cfg.MaxMessageBytes-160 {
			enc.add(rs[n])
			n++
		}
		if b.publish(nc, "readings", enc.buf) {
			b.met.sent.Add(float64(n))
			b.met.bytesSent.Add(float64(len(enc.buf)))
		} else {
			b.met.dropped.WithLabelValues("send").Add(float64(n))
		}
		rs = rs[n:]
	}
}

// publish sends one message; false if nats.go refused it (its reconnect
// buffer is full, or the connection is closed).
func (b *Bus) publish(nc *nats.Conn, kind string, data []byte) bool {
	if err := nc.Publish(b.subject(kind), data); err != nil {
		b.log.Debug("nats publish failed", "kind", kind, "err", err)
		return false
	}
	return true
}

// onReadings applies a node's readings; buf is the subscription's reusable
// buffer, returned for the next message.
func (b *Bus) onReadings(node string, data []byte, buf []ingest.Reading, in *interner) []ingest.Reading {
	b.heard(node)
	b.met.bytesReceived.Add(float64(len(data)))
	rs, err := decodeReadings(buf, data, in)
	if err != nil {
		b.met.dropped.WithLabelValues("corrupt").Inc()
		b.log.Warn("corrupt readings message", "from", node, "err", err)
	}
	if len(rs) == 0 {
		return rs
	}
	st := b.cfg.Apply.ApplyRemote(rs, b.cfg.Clock.Now().UnixMilli(), b.cfg.PersistRemote)
	b.met.received.Add(float64(st.Applied))
	if st.Dropped > 0 {
		b.met.dropped.WithLabelValues("apply").Add(float64(st.Dropped))
	}
	if b.cfg.Live != nil {
		b.cfg.Live(rs) // copies them
	}
	return rs
}

// heard notes that a node is alive. A node new to this one (it joined, or
// came back after either side lost NATS for longer than NodeTimeout) gets
// this node's full presence and is asked for its own: each side may have
// expired the other, and presence sent while one was cut off is lost.
func (b *Bus) heard(node string) {
	nowMs := b.cfg.Clock.Now().UnixMilli()
	b.mu.Lock()
	p := b.peers[node]
	if p == nil {
		p = &peer{devices: make(map[string]bool)}
		b.peers[node] = p
		b.log.Info("node joined", "peer", node)
		b.wantSnapshot.Store(true)
		b.wantSync.Store(true)
		b.signal()
	}
	p.lastMs = nowMs
	b.mu.Unlock()
}

func (b *Bus) onHeartbeat(node string, m *nats.Msg) {
	var hb heartbeatMsg
	_ = json.Unmarshal(m.Data, &hb)
	if hb.Leaving {
		b.mu.Lock()
		if p := b.peers[node]; p != nil {
			b.dropPeerLocked(node, p, b.cfg.Clock.Now().UnixMilli())
			b.log.Info("node left", "peer", node)
		}
		b.mu.Unlock()
		return
	}
	b.heard(node)
}

func (b *Bus) onPresence(node string, m *nats.Msg) {
	var pm presenceMsg
	if err := json.Unmarshal(m.Data, &pm); err != nil {
		b.log.Warn("corrupt presence message", "from", node, "err", err)
		return
	}
	b.heard(node)
	nowMs := b.cfg.Clock.Now().UnixMilli()
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.peers[node]
	if p == nil {
		return // left in between
	}
	if pm.Full {
		want := make(map[string]bool, len(pm.Changes))
		for _, c := range pm.Changes {
			if c.Online && ingest.ValidName(c.Device) {
				want[c.Device] = true
			}
		}
		for d := range p.devices {
			if !want[d] {
				delete(p.devices, d)
				b.bumpLocked(d, false, nowMs)
			}
		}
		for d := range want {
			if !p.devices[d] {
				p.devices[d] = true
				b.bumpLocked(d, true, nowMs)
			}
		}
		return
	}
	for _, c := range pm.Changes {
		if !ingest.ValidName(c.Device) || p.devices[c.Device] == c.Online {
			continue
		}
		if c.Online {
			p.devices[c.Device] = true
		} else {
			delete(p.devices, c.Device)
		}
		b.bumpLocked(c.Device, c.Online, nowMs)
	}
}

// expire forgets the nodes not heard from within NodeTimeout, withdrawing
// their devices' presence.
func (b *Bus) expire() {
	nowMs := b.cfg.Clock.Now().UnixMilli()
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, p := range b.peers {
		if nowMs-p.lastMs > b.cfg.NodeTimeout.Milliseconds() {
			b.log.Warn("node silent; its devices are shown offline", "peer", id, "silentFor", time.Duration(nowMs-p.lastMs)*time.Millisecond)
			b.dropPeerLocked(id, p, nowMs)
		}
	}
}

// dropPeerLocked forgets a node and withdraws its devices' presence. The
// caller must hold b.mu.
func (b *Bus) dropPeerLocked(id string, p *peer, nowMs int64) {
	for d := range p.devices {
		b.bumpLocked(d, false, nowMs)
	}
	delete(b.peers, id)
}
