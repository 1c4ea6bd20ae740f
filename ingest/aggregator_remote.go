package ingest

// RemoteStats counts what ApplyRemote did.
type RemoteStats struct {
	// Applied is the readings folded into the aggregator.
	Applied uint64
	// Dropped is the readings refused: an invalid series id, or no room
	// left under MaxSeries or MaxDevices.
	Dropped uint64
}

// ApplyRemote folds readings another cluster node accepted from its own
// devices into this aggregator, as of atMs (when the node sent them), so
// that this node's device list, rates, recent raw readings and queries see
// every device of the cluster.
//
// The origin node already validated the readings and ran the per-device
// limits (series per device, reading rate), so they are not run again and
// nothing is counted as rejected here, nor as accepted
// (telegauge_readings_accepted_total stays this node's own ingest). The
// server-wide MaxSeries and MaxDevices still bound memory: a reading that
// would go over them, or that names no valid series, is dropped and
// counted in the returned stats.
//
// With persist, the readings also go into the pending buckets that the
// next flush writes to this node's store (a history of its own, such as a
// SQLite file per node). Without, they are kept for live use only (the
// recent raw readings and the device's activity), because the origin node
// writes them to a history store the nodes share: merging them there twice
// would count them twice.
//
// ApplyRemote does not queue the readings for DrainReadings: the caller
// hands them to the live hub itself, so that what DrainReadings returns is
// exactly this node's own accepted readings, the ones a cluster node
// publishes to the others.
func (a *Aggregator) ApplyRemote(rs []Reading, atMs int64, persist bool) RemoteStats {
	var st RemoteStats
	if a.stopped.Load() {
		st.Dropped = uint64(len(rs))
		return st
	}
	// Readings come grouped by device from a node's shards, so runs of one
	// shard are long: lock once per run.
	for i := 0; i < len(rs); {
		s := a.shardFor(rs[i].Device())
		j := i + 1
		for j < len(rs) && a.shardFor(rs[j].Device()) == s {
			j++
		}
		ap, dr := s.applyRemote(rs[i:j], atMs, persist)
		st.Applied += ap
		st.Dropped += dr
		i = j
	}
	return st
}

// applyRemote is ApplyRemote for readings of this shard's devices.
func (s *shard) applyRemote(rs []Reading, atMs int64, persist bool) (applied, dropped uint64) {
	nowSec := atMs / 1000
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range rs {
		ser := s.series[r.Series]
		if ser == nil {
			if ser = s.newRemoteSeriesLocked(r.Series); ser == nil {
				dropped++
				continue
			}
		}
		ser.dev.seen(atMs)
		ser.dev.count(nowSec)
		if persist {
			s.addLocked(ser, r)
		} else {
			ser.addRaw(r, s.a.cfg.RawPoints)
		}
		applied++
	}
	return applied, dropped
}

// newRemoteSeriesLocked creates a series another node accepted: no
// per-device limit (the origin ran it), only the server-wide ones. The
// caller must hold s.mu.
func (s *shard) newRemoteSeriesLocked(id string) *series {
	if !ValidSeries(id) {
		return nil
	}
	dev := s.deviceLocked(SeriesDevice(id))
	if dev == nil || !reserve(&s.a.metrics.series, s.a.cfg.MaxSeries) {
		return nil
	}
	return s.insertSeriesLocked(id, dev)
}
