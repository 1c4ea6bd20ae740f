package dashboard

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Board is a saved dashboard: named panels, each charting the series its
// patterns match over a time range.
type Board struct {
	ID      string  `json:"id"`
	Name    string  `json:"name"`
	Panels  []Panel `json:"panels"`
	Updated int64   `json:"updated"` // Unix ms of the last save
}

// Panel is one chart of a board.
type Panel struct {
	Title string `json:"title"`
	// Series are live-subscription patterns: ids or MQTT-style wildcards.
	Series []string `json:"series"`
	// Range is the time window shown, a duration such as "1h" or "7d".
	Range string `json:"range"`
}

// BoardSummary is what a board list shows.
type BoardSummary struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Updated int64  `json:"updated"`
}

// Limits of a board, so that one cannot grow without bound.
const (
	MaxBoardNameLen     = 100
	MaxBoardPanels      = 50
	MaxPanelSeries      = 50
	maxBoardRange       = 400 * 24 * time.Hour
	defaultPanelRange   = "1h"
	boardIDAlphabetBase = 36
)

// BoardStore keeps boards. Implementations are safe for concurrent use.
type BoardStore interface {
	// List returns every board's summary, sorted by name then id.
	List(ctx context.Context) ([]BoardSummary, error)
	// Get returns a board, or a CodeNotFound error.
	Get(ctx context.Context, id string) (Board, error)
	// Put saves a board under its ID (create or replace).
	Put(ctx context.Context, b Board) error
	// Delete removes a board; a CodeNotFound error if there is none.
	Delete(ctx context.Context, id string) error
}

// NormalizeBoard validates a board from a client and returns it cleaned up:
// names trimmed, patterns canonical, empty ranges defaulted. Problems are
// CodeInvalid errors naming the field.
func NormalizeBoard(b Board) (Board, error) {
	b.Name = strings.TrimSpace(b.Name)
	if b.Name == "" || utf8.RuneCountInString(b.Name) > MaxBoardNameLen || !utf8.ValidString(b.Name) {
		return Board{}, Errorf(CodeInvalid, "name must be 1 to %d characters", MaxBoardNameLen)
	}
	if len(b.Panels) > MaxBoardPanels {
		return Board{}, Errorf(CodeInvalid, "at most %d panels", MaxBoardPanels)
	}
	if b.Panels == nil {
		b.Panels = []Panel{}
	}
	for i := range b.Panels {
		p := &b.Panels[i]
		p.Title = strings.TrimSpace(p.Title)
		if utf8.RuneCountInString(p.Title) > MaxBoardNameLen || !utf8.ValidString(p.Title) {
			return Board{}, Errorf(CodeInvalid, "panel %d: title must be at most %d characters", i+1, MaxBoardNameLen)
		}
		if len(p.Series) == 0 || len(p.Series) > MaxPanelSeries {
			return Board{}, Errorf(CodeInvalid, "panel %d: give 1 to %d series patterns", i+1, MaxPanelSeries)
		}
		ps, err := ParsePatterns(p.Series)
		if err != nil {
			return Board{}, Errorf(CodeInvalid, "panel %d: %v", i+1, err)
		}
		p.Series = ps.List()
		if p.Range == "" {
			p.Range = defaultPanelRange
		}
		d, err := ParseDuration(p.Range)
		if err != nil || d <= 0 || d > maxBoardRange {
			return Board{}, Errorf(CodeInvalid, "panel %d: range %.20q: want a duration up to 400d, like 1h or 7d", i+1, p.Range)
		}
	}
	return b, nil
}

// NewBoardID returns a random board id.
func NewBoardID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return strconv.FormatUint(binary.LittleEndian.Uint64(b[:])>>12, boardIDAlphabetBase)
}

// ValidBoardID reports whether s could be a board id (so that garbage is a
// 404 without a store lookup).
func ValidBoardID(s string) bool {
	return len(s) > 0 && len(s) <= 16 && base36(s)
}
