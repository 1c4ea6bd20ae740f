package dashboard

import (
	"cmp"
	"context"
	"slices"
	"sync"
)

// MemoryBoards is a BoardStore in memory: boards last until the process
// exits.
type MemoryBoards struct {
	mu     sync.Mutex // guards boards
	boards map[string]Board
}

var _ BoardStore = (*MemoryBoards)(nil)

// NewMemoryBoards returns an empty store.
func NewMemoryBoards() *MemoryBoards {
	return &MemoryBoards{boards: make(map[string]Board)}
}

// List implements BoardStore.
func (m *MemoryBoards) List(context.Context) ([]BoardSummary, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]BoardSummary, 0, len(m.boards))
	for _, b := range m.boards {
		out = append(out, BoardSummary{ID: b.ID, Name: b.Name, Updated: b.Updated})
	}
	slices.SortFunc(out, func(a, b BoardSummary) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// Get implements BoardStore.
func (m *MemoryBoards) Get(_ context.Context, id string) (Board, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.boards[id]
	if !ok {
		return Board{}, Errorf(CodeNotFound, "no dashboard %q", id)
	}
	return cloneBoard(b), nil
}

// Put implements BoardStore.
func (m *MemoryBoards) Put(_ context.Context, b Board) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.boards[b.ID] = cloneBoard(b)
	return nil
}

// Delete implements BoardStore.
func (m *MemoryBoards) Delete(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.boards[id]; !ok {
		return Errorf(CodeNotFound, "no dashboard %q", id)
	}
	delete(m.boards, id)
	return nil
}

// cloneBoard copies a board deeply, so that callers never share slices with
// the store.
func cloneBoard(b Board) Board {
	b.Panels = slices.Clone(b.Panels)
	for i := range b.Panels {
		b.Panels[i].Series = slices.Clone(b.Panels[i].Series)
	}
	return b
}
