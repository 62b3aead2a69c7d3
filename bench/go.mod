module github.com/trellis-go/trellis/bench

go 1.26.0

replace github.com/trellis-go/trellis => ../

require (
	github.com/failsafe-go/failsafe-go v0.9.8
	github.com/google/pprof v0.0.0-20261118010117-084b33a85f63
	github.com/sony/gobreaker/v2 v2.4.0
	github.com/trellis-go/trellis v0.0.0-00010101000000-000000000000
)

require (
	github.com/bits-and-blooms/bitset v1.24.4 // indirect
	golang.org/x/time v0.16.0 // indirect
)
