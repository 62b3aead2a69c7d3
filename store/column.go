package store

import (
	"context"
	"database/sql"
	"fmt"
)

// AddColumn adds column to table, defined as definition (its type and
// constraints, e.g. "INTEGER NOT NULL DEFAULT 0"), unless the table has it:
// for a package whose idempotent schema (CREATE TABLE IF NOT EXISTS)
// gained a column that tables created by its earlier versions lack. It is
// idempotent and safe when replicas run it at once. table and column are
// identifiers of the caller's own, never input.
func (db *DB) AddColumn(ctx context.Context, table, column, definition string) error {
	if db.dialect == Postgres {
		_, err := db.writer.ExecContext(ctx, "ALTER TABLE "+table+" ADD COLUMN IF NOT EXISTS "+column+" "+definition)
		if err != nil {
			return fmt.Errorf("store: add column %s.%s: %w", table, column, err)
		}
		return nil
	}
	// The writer's transaction: no other connection adds it meanwhile.
	err := db.InTx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?", table, column).Scan(&n); err != nil || n > 0 {
			return err
		}
		_, err := tx.ExecContext(ctx, "ALTER TABLE "+table+" ADD COLUMN "+column+" "+definition)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: add column %s.%s: %w", table, column, err)
	}
	return nil
}
