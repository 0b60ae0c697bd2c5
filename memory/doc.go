// Package memory holds conversation history over a KV binding: the stored
// format (versioned, so a newer agentd can read what an older one wrote),
// loading, saving with compare-and-swap, forgetting, and the policies that
// bound a history: pruning by turns, and compaction, which folds the oldest
// exchanges into a model-written summary in chunks so that the prompt's
// prefix, and with it the prompt cache, stays stable between compactions.
//
// It imports the root package only; callers serialize turns per conversation
// (package coord) and memory refuses a write from a caller that was not the
// last to read, so even an unserialized writer cannot silently lose a turn.
package memory
