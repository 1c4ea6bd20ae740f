package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/telegauge/telegauge/ingest/store"
)

// BoardRows is the database side of saved dashboards: raw rows, the board
// itself as a JSON document. store.SQL is one.
type BoardRows interface {
	PutBoard(ctx context.Context, id, name string, doc []byte, updatedMs int64) error
	GetBoard(ctx context.Context, id string) (name string, doc []byte, updatedMs int64, err error)
	ListBoards(ctx context.Context) ([]store.BoardRecord, error)
	DeleteBoard(ctx context.Context, id string) error
}

// DBBoards is a BoardStore kept in the history database.
type DBBoards struct{ rows BoardRows }

var _ BoardStore = (*DBBoards)(nil)

// NewDBBoards returns a BoardStore over rows.
func NewDBBoards(rows BoardRows) *DBBoards { return &DBBoards{rows: rows} }

// List implements BoardStore.
func (d *DBBoards) List(ctx context.Context) ([]BoardSummary, error) {
	recs, err := d.rows.ListBoards(ctx)
	if err != nil {
		return nil, fmt.Errorf("list dashboards: %w", err)
	}
	out := make([]BoardSummary, len(recs))
	for i, r := range recs {
		out[i] = BoardSummary{ID: r.ID, Name: r.Name, Updated: r.UpdatedMs}
	}
	return out, nil
}

// Get implements BoardStore.
func (d *DBBoards) Get(ctx context.Context, id string) (Board, error) {
	name, doc, updated, err := d.rows.GetBoard(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return Board{}, Errorf(CodeNotFound, "no dashboard %q", id)
	}
	if err != nil {
		return Board{}, fmt.Errorf("get dashboard: %w", err)
	}
	b := Board{ID: id, Name: name, Updated: updated}
	if err := json.Unmarshal(doc, &b.Panels); err != nil {
		return Board{}, fmt.Errorf("decode dashboard %s: %w", id, err)
	}
	return b, nil
}

// Put implements BoardStore.
func (d *DBBoards) Put(ctx context.Context, b Board) error {
	doc, err := json.Marshal(b.Panels)
	if err != nil {
		return fmt.Errorf("encode dashboard: %w", err)
	}
	if err := d.rows.PutBoard(ctx, b.ID, b.Name, doc, b.Updated); err != nil {
		return fmt.Errorf("save dashboard: %w", err)
	}
	return nil
}

// Delete implements BoardStore.
func (d *DBBoards) Delete(ctx context.Context, id string) error {
	err := d.rows.DeleteBoard(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return Errorf(CodeNotFound, "no dashboard %q", id)
	}
	if err != nil {
		return fmt.Errorf("delete dashboard: %w", err)
	}
	return nil
}
