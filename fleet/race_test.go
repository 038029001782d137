//go:build race

package fleet

// raceEnabled builds the worker under test with the race detector when the
// tests themselves run with it.
const raceEnabled = true
