package store

// DisableGroupCommit makes db run each InTx in a transaction of its own,
// as before group commit: the baseline of BenchmarkInTx.
func DisableGroupCommit(db *DB) {
	if db.group != nil {
		db.group.b.Close()
		db.group = nil
	}
}

// QueuedInTx returns the number of InTx calls waiting for a grouped
// transaction on db.
func QueuedInTx(db *DB) int {
	if db.group == nil {
		return 0
	}
	return db.group.b.Len()
}

// StmtCacheSize is how many statements a SQLite connection keeps
// prepared.
const StmtCacheSize = stmtCacheSize
