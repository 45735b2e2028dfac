package engine

import "time"

// State is what a Consumer is doing now: for health checks and gauges,
// read when asked (Consumer.State), never pushed.
type State struct {
	Phase Phase

	// RedisDown is when the current Redis outage began; zero while Redis
	// answers. Outages counts the outages so far, and OutageTime their
	// total duration, the current one included.
	RedisDown  time.Time
	Outages    int64
	OutageTime time.Duration

	// NoGroup is set while the group is missing: the last read found it
	// gone, and it is being created again.
	NoGroup bool

	Workers  int // Options.Concurrency
	InFlight int // calls running now
	Waiting  int // failed entries waiting for their next attempt

	// Progress is when a loop last did something: a read came back (with
	// entries or without, or failed and will be retried), a worker finished
	// a chunk of entries or, with an Observer, a call ended. A consumer
	// whose Progress is older than its longest call is stuck.
	Progress time.Time
}

// Phase is the stage of a Consumer's run.
type Phase int32

const (
	PhaseStarting Phase = iota // Run not called yet, or creating the group
	PhaseRunning               // reading and processing
	PhaseDraining              // stopping: finishing what was read
	PhaseStopped               // Run returned
)

func (p Phase) String() string {
	return [...]string{"starting", "running", "draining", "stopped"}[p]
}

// State returns what the consumer is doing now. It is safe to call from
// any goroutine, at any time.
func (c *Consumer) State() State {
	s := State{
		Phase:   Phase(c.phase.Load()),
		NoGroup: c.noGroup.Load(),
		Workers: c.opts.Concurrency,
		Waiting: c.retries.len(),
	}
	progress := c.progress.Load()
	for i := range c.attempts.running {
		slot := &c.attempts.running[i]
		if slot.m.Load() != nil {
			s.InFlight++
		}
		progress = max(progress, slot.done.Load())
	}
	s.Progress = time.Unix(0, progress)
	s.RedisDown, s.Outages, s.OutageTime = c.redis.state()
	return s
}

// advanced notes that a loop made progress.
func (c *Consumer) advanced() { c.progress.Store(time.Now().UnixNano()) }
