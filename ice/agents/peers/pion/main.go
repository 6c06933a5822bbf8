// icelab-pion-agent: pion/ice v2 behind the icelab agent protocol, version 1 (docs/agent-protocol.md).
//
// Commands arrive as lines on standard input, reports leave as lines on standard output (one locked writer, so
// the goroutines pion calls back on never interleave a line). pion's own logs go to standard error; set
// ICELAB_AGENT_DEBUG=1 for its trace level. Built offline in GOPATH mode from Debian's sources by
// scripts/provision.sh (docs/agents.md).
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/logging"
)

// stackVersion is the packaged pion/ice version; provision.sh sets it from dpkg with -ldflags -X.
var stackVersion = "2.3.1"

const features = "trickle stun turn-udp turn-tcp relay-only lite restart consent-timeout bulk"

// A bulk datagram (docs/agent-protocol.md, Bulk data): these four bytes, a 32-bit big-endian sequence number, then
// padding up to its size.
var bulkMagic = []byte("\x7fblk")

const (
	bulkMinSize = 8
	bulkMaxSize = 1472
)

// epoch is the origin of the clock bulk-received reports (monotonic: time.Since reads Go's monotonic clock).
var epoch = time.Now()

// bulkCounter counts the bulk datagrams received since the last bulk-report.
type bulkCounter struct {
	mu              sync.Mutex
	count, size     int64
	firstAt, lastAt float64
	reordered       int64
	highest         int64
}

func (b *bulkCounter) add(p []byte) {
	now := time.Since(epoch).Seconds()
	seq := int64(binary.BigEndian.Uint32(p[4:8]))
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.count == 0 {
		b.firstAt, b.highest = now, -1
	}
	b.count++
	b.size += int64(len(p))
	b.lastAt = now
	if seq < b.highest {
		b.reordered++
	} else {
		b.highest = seq
	}
}

// report returns the bulk-received line and starts counting again from zero.
func (b *bulkCounter) report() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	line := fmt.Sprintf("bulk-received %d %d %.6f %.6f %d", b.count, b.size, b.firstAt, b.lastAt, b.reordered)
	b.count, b.size, b.firstAt, b.lastAt, b.reordered, b.highest = 0, 0, 0, 0, 0, -1
	return line
}

var outMu sync.Mutex

// out prints one report line; os.Stdout is unbuffered in Go, so the line leaves at once.
func out(format string, a ...interface{}) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Fprintf(os.Stdout, format+"\n", a...)
}

type turnServer struct {
	host, port, user, pass, transport string
}

// settings are what the `set` lines asked for, applied at `start`.
type settings struct {
	role           string // "controlling" or "controlled"; "" until set
	binds          []net.IP
	stun           []string // host:port
	turn           []turnServer
	nomination     string // "", "regular" or "aggressive"
	lite           bool
	relayOnly      bool
	trickleOff     bool
	echo           bool
	consentTimeout time.Duration
}

type adapter struct {
	s settings

	mu          sync.Mutex
	agent       *ice.Agent
	started     bool
	pending     []string // remote-* lines received before start
	conn        *ice.Conn
	connReady   chan struct{}
	dialing     bool
	selected    bool // pion reported a selected pair
	remoteUfrag string
	remotePwd   string
	restarting  bool // we restarted and wait for the peer's new credentials
	held        []string
	gathering   bool
	bulkIn      bulkCounter
	bulkSending bool
}

func main() {
	out("hello icelab-agent/1 pion %s", stackVersion)
	out("features %s", features)
	a := &adapter{connReady: make(chan struct{})}
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if a.handle(strings.TrimRight(sc.Text(), "\r")) {
			break
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "reading standard input: %v\n", err)
	}
	a.close()
	os.Exit(0)
}

// handle runs one command line; it returns true on quit.
func (a *adapter) handle(line string) bool {
	if line == "" {
		out("error empty line")
		return false
	}
	verb, rest, _ := strings.Cut(line, " ")
	switch verb {
	case "set":
		out("%s", a.set(rest))
	case "start":
		a.start()
	case "remote-credentials", "remote-candidate", "remote-end-of-candidates":
		if !a.started {
			a.pending = append(a.pending, line)
			return false
		}
		a.remote(verb, rest)
	case "send":
		a.send([]byte(rest))
	case "bulk":
		a.startBulk(rest)
	case "bulk-report":
		out("%s", a.bulkIn.report())
	case "restart":
		a.restart()
	case "quit":
		return true
	default:
		out("error unknown command %s", verb)
	}
	return false
}

// set applies one `set NAME VALUE...` line and returns the answer (ok / unsupported REASON).
func (a *adapter) set(rest string) string {
	if a.started {
		return "unsupported settings are taken before start"
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return "unsupported set needs a name"
	}
	name, args := f[0], f[1:]
	one := func() (string, bool) {
		if len(args) != 1 {
			return "", false
		}
		return args[0], true
	}
	switch name {
	case "role":
		v, ok := one()
		if !ok || (v != "controlling" && v != "controlled") {
			return "unsupported role must be controlling or controlled"
		}
		if v == "controlling" && a.s.lite {
			return "unsupported pion 2.3.1 is ICE-lite only as the controlled agent (a lite controlling agent is a full one)"
		}
		if v == "controlling" && a.s.nomination == "aggressive" {
			return "unsupported pion 2.3.1 nominates regularly when controlling (no aggressive nomination option)"
		}
		a.s.role = v
	case "bind":
		v, ok := one()
		ip := net.ParseIP(v)
		if !ok || ip == nil {
			return "unsupported bind needs one IP address"
		}
		a.s.binds = append(a.s.binds, ip)
	case "stun":
		if len(args) != 2 || !validPort(args[1]) {
			return "unsupported stun needs HOST PORT"
		}
		a.s.stun = append(a.s.stun, net.JoinHostPort(args[0], args[1]))
	case "turn":
		if len(args) != 5 || !validPort(args[1]) || (args[4] != "udp" && args[4] != "tcp") {
			return "unsupported turn needs HOST PORT USER PASSWORD udp|tcp"
		}
		a.s.turn = append(a.s.turn, turnServer{args[0], args[1], args[2], args[3], args[4]})
	case "nomination":
		v, ok := one()
		switch {
		case !ok || (v != "regular" && v != "aggressive"):
			return "unsupported nomination must be regular or aggressive"
		case v == "aggressive" && a.s.role == "controlling":
			return "unsupported pion 2.3.1 nominates regularly when controlling (no aggressive nomination option)"
		}
		a.s.nomination = v
	case "lite":
		v, ok := one()
		switch {
		case !ok || (v != "on" && v != "off"):
			return "unsupported lite must be on or off"
		case v == "on" && a.s.role == "controlling":
			return "unsupported pion 2.3.1 is ICE-lite only as the controlled agent (a lite controlling agent is a full one)"
		}
		a.s.lite = v == "on"
	case "relay-only", "trickle", "echo":
		v, ok := one()
		if !ok || (v != "on" && v != "off") {
			return "unsupported " + name + " must be on or off"
		}
		switch name {
		case "relay-only":
			a.s.relayOnly = v == "on"
		case "trickle":
			a.s.trickleOff = v == "off"
		case "echo":
			a.s.echo = v == "on"
		}
	case "consent-timeout":
		v, ok := one()
		secs, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil || secs <= 0 {
			return "unsupported consent-timeout needs a positive number of seconds"
		}
		a.s.consentTimeout = time.Duration(secs * float64(time.Second))
	default:
		return "unsupported unknown setting " + name
	}
	return "ok"
}

func validPort(s string) bool {
	p, err := strconv.Atoi(s)
	return err == nil && p > 0 && p < 65536
}

// config builds pion's AgentConfig from the settings.
func (a *adapter) config() (*ice.AgentConfig, error) {
	s := a.s
	cfg := &ice.AgentConfig{
		MulticastDNSMode: ice.MulticastDNSModeDisabled,
		Lite:             s.lite,
		LoggerFactory:    loggerFactory(),
	}
	if len(s.binds) > 0 {
		allowed := map[string]bool{}
		v4, v6, loopback := false, false, false
		ifaces, err := net.Interfaces()
		if err != nil {
			return nil, err
		}
		for _, ip := range s.binds {
			found := false
			for _, ifc := range ifaces {
				addrs, _ := ifc.Addrs()
				for _, ad := range addrs {
					if n, ok := ad.(*net.IPNet); ok && n.IP.Equal(ip) {
						allowed[ifc.Name], found = true, true
					}
				}
			}
			if !found {
				return nil, fmt.Errorf("cannot bind to %s: no interface has this address", ip)
			}
			if ip.To4() != nil {
				v4 = true
			} else {
				v6 = true
			}
			loopback = loopback || ip.IsLoopback()
		}
		binds := s.binds
		cfg.IPFilter = func(ip net.IP) bool {
			for _, b := range binds {
				if b.Equal(ip) {
					return true
				}
			}
			return false
		}
		cfg.InterfaceFilter = func(name string) bool { return allowed[name] }
		cfg.IncludeLoopback = loopback
		if v4 {
			cfg.NetworkTypes = append(cfg.NetworkTypes, ice.NetworkTypeUDP4)
		}
		if v6 {
			cfg.NetworkTypes = append(cfg.NetworkTypes, ice.NetworkTypeUDP6)
		}
	} else {
		// pion picks the addresses (loopback excluded); UDP only, no ICE-TCP.
		cfg.NetworkTypes = []ice.NetworkType{ice.NetworkTypeUDP4, ice.NetworkTypeUDP6}
	}

	var srflx, relay bool
	for _, hp := range s.stun {
		u, err := ice.ParseURL("stun:" + hp)
		if err != nil {
			return nil, err
		}
		cfg.Urls = append(cfg.Urls, u)
		srflx = true
	}
	for _, t := range s.turn {
		u, err := ice.ParseURL("turn:" + net.JoinHostPort(t.host, t.port) + "?transport=" + t.transport)
		if err != nil {
			return nil, err
		}
		u.Username, u.Password = t.user, t.pass
		cfg.Urls = append(cfg.Urls, u)
		relay = true
		if t.transport == "udp" {
			srflx = true // pion asks every URL for a server-reflexive address, the TURN server too
		}
	}
	switch {
	case s.lite:
		// A lite agent has host candidates only (RFC 8445 section 2.5); pion refuses server URLs that no
		// candidate type would use, so they are dropped.
		cfg.CandidateTypes = []ice.CandidateType{ice.CandidateTypeHost}
		cfg.Urls = nil
	case s.relayOnly:
		cfg.CandidateTypes = []ice.CandidateType{ice.CandidateTypeRelay}
	default:
		cfg.CandidateTypes = []ice.CandidateType{ice.CandidateTypeHost}
		if srflx {
			cfg.CandidateTypes = append(cfg.CandidateTypes, ice.CandidateTypeServerReflexive)
		}
		if relay {
			cfg.CandidateTypes = append(cfg.CandidateTypes, ice.CandidateTypeRelay)
		}
	}
	if s.consentTimeout > 0 {
		// pion has no RFC 7675 timer of its own: the selected pair goes disconnected after DisconnectedTimeout
		// without inbound traffic and failed after FailedTimeout more (5 s + 25 s by default). Keepalives (Binding
		// requests, answered by a live peer) must come well within that window.
		disc := s.consentTimeout / 2
		failed := s.consentTimeout - disc
		keep := 2 * time.Second
		if k := s.consentTimeout / 6; k < keep {
			keep = k
		}
		cfg.DisconnectedTimeout, cfg.FailedTimeout, cfg.KeepaliveInterval = &disc, &failed, &keep
	}
	return cfg, nil
}

// loggerFactory sends pion's logs to standard error (its default writer is standard output, the protocol's).
func loggerFactory() logging.LoggerFactory {
	lf := logging.NewDefaultLoggerFactory()
	lf.Writer = os.Stderr
	if os.Getenv("ICELAB_AGENT_DEBUG") != "" {
		lf.DefaultLogLevel = logging.LogLevelTrace
	} else {
		lf.DefaultLogLevel = logging.LogLevelWarn
	}
	return lf
}

var stateNames = map[ice.ConnectionState]string{
	ice.ConnectionStateChecking:     "checking",
	ice.ConnectionStateConnected:    "connected",
	ice.ConnectionStateCompleted:    "completed",
	ice.ConnectionStateDisconnected: "disconnected",
	ice.ConnectionStateFailed:       "failed",
	ice.ConnectionStateClosed:       "closed",
}

func (a *adapter) start() {
	if a.started {
		out("error start was already sent")
		return
	}
	if a.s.role == "" {
		out("error start before set role: taking controlled")
		a.s.role = "controlled"
	}
	cfg, err := a.config()
	if err != nil {
		out("error %v", err)
		os.Exit(2)
	}
	agent, err := ice.NewAgent(cfg)
	if err != nil {
		out("error %v", err)
		os.Exit(2)
	}
	a.agent = agent
	a.started = true
	if err := agent.OnCandidate(a.onCandidate); err != nil {
		out("error %v", err)
	}
	if err := agent.OnConnectionStateChange(func(s ice.ConnectionState) {
		if name, ok := stateNames[s]; ok {
			out("state %s", name)
		}
	}); err != nil {
		out("error %v", err)
	}
	if err := agent.OnSelectedCandidatePairChange(func(l, r ice.Candidate) {
		a.mu.Lock()
		a.selected = true
		a.mu.Unlock()
		out("selected %s | %s", l.Marshal(), r.Marshal())
	}); err != nil {
		out("error %v", err)
	}
	a.gather()
	for _, line := range a.pending {
		verb, rest, _ := strings.Cut(line, " ")
		a.remote(verb, rest)
	}
	a.pending = nil
}

// gather prints the credentials and starts gathering (candidates leave through onCandidate).
func (a *adapter) gather() {
	u, p, err := a.agent.GetLocalUserCredentials()
	if err != nil {
		out("error %v", err)
		return
	}
	out("local-credentials %s %s", u, p)
	a.mu.Lock()
	a.gathering = true
	a.held = nil
	a.mu.Unlock()
	if err := a.agent.GatherCandidates(); err != nil {
		out("error gathering: %v", err)
	}
}

func (a *adapter) onCandidate(c ice.Candidate) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.gathering {
		return
	}
	if c != nil {
		line := "local-candidate " + c.Marshal()
		if a.s.trickleOff {
			a.held = append(a.held, line)
		} else {
			out("%s", line)
		}
		return
	}
	for _, line := range a.held {
		out("%s", line)
	}
	a.held = nil
	a.gathering = false
	out("local-end-of-candidates")
}

func (a *adapter) remote(verb, rest string) {
	switch verb {
	case "remote-credentials":
		f := strings.Fields(rest)
		if len(f) < 2 || len(f) > 3 || (len(f) == 3 && f[2] != "lite") {
			out("error remote-credentials needs UFRAG PWD [lite]")
			return
		}
		a.credentials(f[0], f[1])
	case "remote-candidate":
		f := strings.Fields(rest)
		if len(f) > 2 {
			f[2] = strings.ToLower(f[2]) // pion wants "udp"; some stacks write "UDP"
		}
		c, err := ice.UnmarshalCandidate(strings.Join(f, " "))
		if err != nil {
			out("error bad remote candidate: %v", err)
			return
		}
		if err := a.agent.AddRemoteCandidate(c); err != nil {
			out("error %v", err)
		}
	case "remote-end-of-candidates":
		// pion 2.3.1 has no end-of-candidates: it keeps checking until its failed timeout.
	}
}

// credentials takes the peer's ufrag and password: the first generation starts Dial or Accept (they block until
// a pair is selected, so in a goroutine); a new generation is a restart, ours or the peer's.
func (a *adapter) credentials(ufrag, pwd string) {
	a.mu.Lock()
	first := a.remoteUfrag == ""
	same := ufrag == a.remoteUfrag && pwd == a.remotePwd
	restarting := a.restarting
	a.mu.Unlock()
	switch {
	case first:
		a.mu.Lock()
		a.remoteUfrag, a.remotePwd, a.dialing = ufrag, pwd, true
		a.mu.Unlock()
		go a.connect(ufrag, pwd)
	case same:
		// the same generation again: nothing to do
	default:
		if !restarting {
			// The peer restarted (RFC 8445 section 2.4): so do we, then take its new credentials.
			if !a.doRestart() {
				return
			}
		}
		a.mu.Lock()
		a.remoteUfrag, a.remotePwd, a.restarting = ufrag, pwd, false
		a.mu.Unlock()
		if err := a.agent.SetRemoteCredentials(ufrag, pwd); err != nil {
			out("error %v", err)
		}
	}
}

func (a *adapter) connect(ufrag, pwd string) {
	var conn *ice.Conn
	var err error
	if a.s.role == "controlling" {
		conn, err = a.agent.Dial(context.Background(), ufrag, pwd)
	} else {
		conn, err = a.agent.Accept(context.Background(), ufrag, pwd)
	}
	a.mu.Lock()
	a.dialing = false
	a.mu.Unlock()
	if err != nil {
		if !errors.Is(err, ice.ErrClosed) {
			out("error %v", err)
		}
		return
	}
	a.mu.Lock()
	a.conn = conn
	a.mu.Unlock()
	close(a.connReady)
	buf := make([]byte, 65536)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			if !errors.Is(err, ice.ErrClosed) && !errors.Is(err, io.EOF) {
				out("error reading: %v", err)
			}
			return
		}
		if n >= bulkMinSize && bytes.Equal(buf[:4], bulkMagic) {
			a.bulkIn.add(buf[:n])
			continue
		}
		out("recv %s", strings.ToValidUTF8(strings.ReplaceAll(string(buf[:n]), "\n", " "), "\uFFFD"))
		if a.s.echo {
			if _, err := conn.Write(buf[:n]); err != nil {
				out("error echo: %v", err)
			}
		}
	}
}

// connection is the connection Dial/Accept returned, or nil when no pair is selected.
func (a *adapter) connection() *ice.Conn {
	a.mu.Lock()
	conn, waiting := a.conn, a.dialing && a.selected
	a.mu.Unlock()
	if conn == nil && waiting {
		// pion reports the selected pair a moment before Dial/Accept returns the connection.
		select {
		case <-a.connReady:
		case <-time.After(2 * time.Second):
		}
		a.mu.Lock()
		conn = a.conn
		a.mu.Unlock()
	}
	return conn
}

func (a *adapter) send(data []byte) {
	conn := a.connection()
	if conn == nil {
		out("error send before a pair is selected")
		return
	}
	if _, err := conn.Write(data); err != nil {
		out("error send: %v", err)
	}
}

// startBulk checks `bulk COUNT SIZE` and sends in a goroutine, so commands keep being read meanwhile.
func (a *adapter) startBulk(rest string) {
	f := strings.Fields(rest)
	var count, size int
	var err1, err2 error
	if len(f) == 2 {
		count, err1 = strconv.Atoi(f[0])
		size, err2 = strconv.Atoi(f[1])
	}
	if len(f) != 2 || err1 != nil || err2 != nil || count < 1 || size < bulkMinSize || size > bulkMaxSize {
		out("error bulk takes COUNT SIZE (COUNT at least 1, SIZE %d to %d bytes)", bulkMinSize, bulkMaxSize)
		return
	}
	conn := a.connection()
	a.mu.Lock()
	busy := a.bulkSending
	if conn != nil && !busy {
		a.bulkSending = true
	}
	a.mu.Unlock()
	switch {
	case conn == nil:
		out("error bulk before a pair is selected")
	case busy:
		out("error bulk while a bulk send is still running")
	default:
		go a.bulk(conn, count, size)
	}
}

// bulk writes count datagrams as fast as Conn.Write takes them, then prints bulk-sent.
func (a *adapter) bulk(conn *ice.Conn, count, size int) {
	payload := make([]byte, size)
	copy(payload, bulkMagic)
	sent := 0
	start := time.Now()
	for seq := 0; seq < count; seq++ {
		binary.BigEndian.PutUint32(payload[4:8], uint32(seq))
		if _, err := conn.Write(payload); err != nil {
			out("error bulk stopped after %d datagrams: %v", sent, err)
			break
		}
		sent++
	}
	elapsed := time.Since(start).Seconds()
	a.mu.Lock()
	a.bulkSending = false
	a.mu.Unlock()
	out("bulk-sent %d %.6f", sent, elapsed)
}

func (a *adapter) restart() {
	if !a.started {
		out("error restart before start")
		return
	}
	if a.doRestart() {
		a.mu.Lock()
		a.restarting = true
		a.mu.Unlock()
	}
}

// doRestart gives the agent new credentials, prints them and gathers again (pion's Restart drops every local and
// remote candidate, and GatherCandidates must then be called again).
func (a *adapter) doRestart() bool {
	if err := a.agent.Restart("", ""); err != nil {
		out("error restart: %v", err)
		return false
	}
	a.gather()
	return true
}

func (a *adapter) close() {
	if a.agent != nil {
		if err := a.agent.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "close: %v\n", err)
		}
	}
}
