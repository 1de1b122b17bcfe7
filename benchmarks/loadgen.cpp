// loadgen: single-threaded raw-epoll load generator for the echo servers (127.0.0.1 only).
//
//   loadgen --port P --mode pingpong|stream|connrate|hold [--connections N] [--size M]
//           [--duration S] [--count K] [--warmup S] [--server-pid PID] [--window B]
//
//   pingpong  N connections, one M-byte message in flight on each; messages/s, p50/p99
//             round-trip latency. --count K: exactly K messages (with --warmup 0).
//   stream    N connections each keeping up to B bytes (--window, default 256 KiB)
//             in flight in M-byte writes; MB/s echoed (MB = 10^6 bytes).
//   connrate  N concurrent slots, each: connect, one M-byte echo, close; connections/s,
//             p50/p99 of the whole cycle. --count K: exactly K connections.
//   hold      opens N connections (each echoes once, so the server has surely taken
//             it), holds them idle for --duration seconds, and reports the server's RSS
//             growth per connection (needs --server-pid).
//
// Every run is bounded in time (setup 60 s at most, then warm-up + duration) and, with
// --count, in count. Every echoed byte is compared with what was sent. Prints exactly one
// line on stdout:
//   result mode=... conns=N size=M msgs=... secs=... msgs_per_s=... p50_us=... p99_us=...
//          mb_per_s=... conns_per_s=... rss_before_kb=... rss_after_kb=...
//          rss_per_conn_b=... errors=... loadgen_cpu=...
// loadgen_cpu is its own user+system CPU time over wall time in the measured interval: near
// 1.0 means the load generator, not the server, may be the bottleneck.
// Exit status: 0, or 1 when anything failed (errors > 0, setup timed out).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace {

enum class mode { pingpong, stream, connrate, hold };

constexpr std::uint64_t unbounded = std::numeric_limits<std::uint64_t>::max();
constexpr std::size_t read_buffer_size = 64 * 1024;
constexpr std::size_t pattern_period = 251;  // prime: a shifted or dropped chunk shows
constexpr std::size_t max_connecting = 512;  // in flight at once, below the listen backlog
constexpr double setup_timeout_s = 60.0;

struct options {
    int port = 0;
    mode m = mode::pingpong;
    const char* mode_name = "pingpong";
    std::size_t connections = 1;
    std::size_t size = 64;
    double duration = 5.0;
    double warmup = 0.0;
    std::uint64_t count = unbounded;
    long server_pid = 0;
    std::size_t window = 256 * 1024;
};

[[noreturn]] void usage(const char* problem) {
    std::fprintf(stderr,
                 "loadgen: %s\nusage: loadgen --port P --mode pingpong|stream|connrate|hold [--connections N] "
                 "[--size M] [--duration S] [--count K] [--warmup S] [--server-pid PID] [--window B]\n",
                 problem);
    std::exit(2);
}

options parse_options(int argc, char** argv) {
    options opt;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (i + 1 >= argc) usage("every option needs a value");
        const char* value = argv[++i];
        if (arg == "--port") {
            opt.port = std::atoi(value);
        } else if (arg == "--mode") {
            const std::string_view v = value;
            opt.mode_name = value;
            if (v == "pingpong") opt.m = mode::pingpong;
            else if (v == "stream") opt.m = mode::stream;
            else if (v == "connrate") opt.m = mode::connrate;
            else if (v == "hold") opt.m = mode::hold;
            else usage("unknown --mode");
        } else if (arg == "--connections") {
            opt.connections = std::strtoull(value, nullptr, 10);
        } else if (arg == "--size") {
            opt.size = std::strtoull(value, nullptr, 10);
        } else if (arg == "--duration") {
            opt.duration = std::strtod(value, nullptr);
        } else if (arg == "--warmup") {
            opt.warmup = std::strtod(value, nullptr);
        } else if (arg == "--count") {
            opt.count = std::strtoull(value, nullptr, 10);
        } else if (arg == "--server-pid") {
            opt.server_pid = std::strtol(value, nullptr, 10);
        } else if (arg == "--window") {
            opt.window = std::strtoull(value, nullptr, 10);
        } else {
            usage("unknown option");
        }
    }
    if (opt.port <= 0 || opt.port > 65535) usage("--port P (1..65535) is required");
    if (opt.connections == 0) usage("--connections must be at least 1");
    if (opt.size == 0 || opt.size > (1u << 20)) usage("--size must be 1 .. 1048576");
    if (opt.duration < 0 || opt.warmup < 0) usage("--duration and --warmup must be >= 0");
    if (opt.window < opt.size) opt.window = opt.size;
    return opt;
}

std::uint64_t now_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

std::uint64_t cpu_ns() noexcept {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    auto ns = [](const timeval& tv) {
        return static_cast<std::uint64_t>(tv.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(tv.tv_usec) * 1000u;
    };
    return ns(ru.ru_utime) + ns(ru.ru_stime);
}

long read_rss_kb(long pid) {
    if (pid <= 0) return 0;
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
    }
    return 0;
}

void raise_nofile_limit(std::size_t needed) {
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
    if (lim.rlim_cur < needed + 16) {
        std::fprintf(stderr, "loadgen: RLIMIT_NOFILE hard limit %llu is too small for %zu connections\n",
                     static_cast<unsigned long long>(lim.rlim_cur), needed);
        std::exit(1);
    }
}

double percentile_us(std::vector<std::uint32_t>& samples, double p) {
    if (samples.empty()) return 0.0;
    const auto k = static_cast<std::size_t>(p * static_cast<double>(samples.size() - 1));
    std::nth_element(samples.begin(), samples.begin() + static_cast<std::ptrdiff_t>(k), samples.end());
    return static_cast<double>(samples[k]) / 1000.0;
}

struct connection {
    int fd = -1;
    bool connected = false;
    bool echoed_once = false;       // hold: the first echo came back
    std::uint64_t sent = 0;         // stream position written
    std::uint64_t received = 0;     // stream position read back
    std::uint64_t target = 0;       // write up to here
    std::uint64_t started_ns = 0;   // pingpong: request sent; connrate: connect issued
};

class load_generator {
public:
    explicit load_generator(const options& opt) : opt_(opt), conns_(opt.connections) {
        pattern_.resize(std::max(read_buffer_size, opt.size) + pattern_period);
        for (std::size_t i = 0; i < pattern_.size(); ++i) pattern_[i] = static_cast<char>(i % pattern_period);
        read_buffer_.resize(read_buffer_size);
        epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
        if (epoll_fd_ < 0) fail("epoll_create1");
        address_.sin_family = AF_INET;
        address_.sin_port = htons(static_cast<std::uint16_t>(opt.port));
        address_.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    }

    int run() {
        rss_before_kb_ = read_rss_kb(opt_.server_pid);
        setup_start_ns_ = now_ns();
        if (opt_.m == mode::connrate) {
            begin_measuring_phases(setup_start_ns_);
            refill_connrate_slots();
        } else {
            open_all();
            if (setup_failed_) return report();
            if (opt_.m == mode::hold) return hold();
            begin_measuring_phases(now_ns());
            for (std::size_t i = 0; i < conns_.size(); ++i) start_traffic(i);
        }
        loop_until([this] { return finished(); });
        return report();
    }

private:
    // ---- phases ---------------------------------------------------------------------

    void begin_measuring_phases(std::uint64_t t) {
        warm_ = opt_.warmup <= 0;
        warmup_end_ns_ = t + static_cast<std::uint64_t>(opt_.warmup * 1e9);
        end_ns_ = warmup_end_ns_ + static_cast<std::uint64_t>(opt_.duration * 1e9);
        if (warm_) start_measuring(t);
    }

    void start_measuring(std::uint64_t t) {
        warm_ = true;
        measure_start_ns_ = t;
        measure_start_cpu_ns_ = cpu_ns();
        done_ = 0;
        bytes_ = 0;
        latencies_.clear();
    }

    void tick(std::uint64_t t) {
        if (!warm_ && t >= warmup_end_ns_) start_measuring(t);
        if (t >= end_ns_) stopping_ = true;
    }

    [[nodiscard]] bool finished() const {
        if (setup_failed_) return true;
        if (stopping_) return true;
        if (!warm_) return false;
        switch (opt_.m) {
        case mode::pingpong:
        case mode::connrate: return done_ >= opt_.count || (budget_exhausted() && in_flight_ == 0);
        case mode::stream: return opt_.count != unbounded && bytes_ >= opt_.count * opt_.size;
        case mode::hold: return false;
        }
        return true;
    }

    // With --count K, no more than K requests (pingpong) or connections (connrate) are
    // started once measuring, counting those still in flight from the warm-up.
    [[nodiscard]] bool budget_exhausted() const {
        return warm_ && opt_.count != unbounded && done_ + in_flight_ >= opt_.count;
    }

    template <typename Done>
    void loop_until(Done done) {
        epoll_event events[1024];
        while (!done()) {
            const int n = ::epoll_wait(epoll_fd_, events, 1024, 10);
            if (n < 0 && errno != EINTR) fail("epoll_wait");
            for (int i = 0; i < n; ++i) on_event(events[i].data.u32, events[i].events);
            tick(now_ns());
            if (opt_.m == mode::connrate) refill_connrate_slots();
            else open_more();
        }
    }

    // ---- connections ----------------------------------------------------------------

    void open_all() {
        open_more();
        loop_until([this] {
            if (now_ns() - setup_start_ns_ > static_cast<std::uint64_t>(setup_timeout_s * 1e9)) {
                std::fprintf(stderr, "loadgen: setup timed out (%zu of %zu connections ready)\n", ready_,
                             conns_.size());
                setup_failed_ = true;
            }
            return setup_failed_ || ready_ == conns_.size();
        });
        setup_end_ns_ = now_ns();
    }

    // Keeps at most max_connecting connections in the connecting state (for hold: until
    // their first echo came back), so that 10,000 connections never overflow the
    // server's listen backlog, where dropped SYNs would cost a one-second retransmit.
    void open_more() {
        while (next_to_open_ < conns_.size() && connecting_ < max_connecting) open(next_to_open_++);
    }

    void open(std::size_t i) {
        connection& c = conns_[i];
        c = connection{};
        c.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c.fd < 0) fail("socket");
        const int one = 1;
        ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c.started_ns = now_ns();
        if (opt_.m != mode::connrate) ++connecting_;
        if (::connect(c.fd, reinterpret_cast<const sockaddr*>(&address_), sizeof address_) != 0 &&
            errno != EINPROGRESS) {
            // EADDRNOTAVAIL: the ephemeral ports are used up (TIME_WAIT after connrate).
            return connection_failed(i, errno);
        }
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
        ev.data.u32 = static_cast<std::uint32_t>(i);
        if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, c.fd, &ev) != 0) fail("epoll_ctl");
    }

    void connection_failed(std::size_t i, int err) {
        connection& c = conns_[i];
        if (errors_ < 5) std::fprintf(stderr, "loadgen: connection %zu: %s\n", i, std::strerror(err));
        ++errors_;
        if (c.fd >= 0) ::close(c.fd);
        c.fd = -1;
        if (opt_.m == mode::connrate) {
            --in_flight_;  // the slot opens a new connection on the next turn
            return;
        }
        setup_failed_ = true;  // a run with fewer connections than asked for is not that run
    }

    void on_connected(std::size_t i) {
        connection& c = conns_[i];
        c.connected = true;
        switch (opt_.m) {
        case mode::pingpong:
        case mode::stream:
            --connecting_;
            ++ready_;
            break;
        case mode::hold:
        case mode::connrate:
            send_request(i);
            break;
        }
    }

    // ---- traffic --------------------------------------------------------------------

    void start_traffic(std::size_t i) {
        if (opt_.m == mode::stream) {
            conns_[i].target = opt_.window;
            write_some(i);
        } else {
            send_request(i);
        }
    }

    void send_request(std::size_t i) {
        if (opt_.m == mode::pingpong && budget_exhausted()) return;
        connection& c = conns_[i];
        if (opt_.m == mode::pingpong) c.started_ns = now_ns();
        c.target += opt_.size;
        if (opt_.m == mode::pingpong) ++in_flight_;
        write_some(i);
    }

    void write_some(std::size_t i) {
        connection& c = conns_[i];
        while (c.sent < c.target) {
            const std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(c.target - c.sent, opt_.size));
            const ssize_t n = ::write(c.fd, pattern_.data() + c.sent % pattern_period, chunk);
            if (n < 0) {
                if (errno == EAGAIN || errno == ENOTCONN) return;  // EPOLLOUT will come
                if (errno == EINTR) continue;
                return connection_failed(i, errno);
            }
            c.sent += static_cast<std::uint64_t>(n);
        }
    }

    void on_event(std::uint32_t i, std::uint32_t events) {
        connection& c = conns_[i];
        if (c.fd < 0) return;
        if (!c.connected) {
            if ((events & EPOLLERR) != 0) {
                int err = 0;
                socklen_t len = sizeof err;
                ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
                return connection_failed(i, err != 0 ? err : ECONNREFUSED);
            }
            if ((events & EPOLLOUT) == 0) return;
            on_connected(i);
            if (c.fd < 0) return;
        }
        if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0 && !read_all(i)) return;
        if ((events & EPOLLOUT) != 0 && c.fd >= 0 && c.sent < c.target) write_some(i);
    }

    // Returns false when the connection is gone (closed or failed).
    bool read_all(std::size_t i) {
        connection& c = conns_[i];
        for (;;) {
            const ssize_t n = ::read(c.fd, read_buffer_.data(), read_buffer_.size());
            if (n == 0) {
                connection_failed(i, ECONNRESET);  // the server closed: never expected
                return false;
            }
            if (n < 0) {
                if (errno == EAGAIN) return true;
                if (errno == EINTR) continue;
                connection_failed(i, errno);
                return false;
            }
            const auto got = static_cast<std::size_t>(n);
            if (c.received + got > c.sent ||
                std::memcmp(read_buffer_.data(), pattern_.data() + c.received % pattern_period, got) != 0) {
                connection_failed(i, EPROTO);  // echoed bytes differ from the bytes sent
                return false;
            }
            c.received += got;
            if (!on_received(i, got)) return false;
            if (got < read_buffer_.size()) return true;  // short read: drained
        }
    }

    bool on_received(std::size_t i, std::size_t got) {
        connection& c = conns_[i];
        switch (opt_.m) {
        case mode::stream:
            if (warm_) bytes_ += got;
            c.target = c.received + opt_.window;
            if (!stopping_) write_some(i);
            return c.fd >= 0;
        case mode::pingpong:
            if (c.received != c.target) return true;
            --in_flight_;
            count_done(c.started_ns);
            if (!stopping_) send_request(i);
            return c.fd >= 0;
        case mode::connrate:
            if (c.received != c.target) return true;
            --in_flight_;
            count_done(c.started_ns);
            ::close(c.fd);
            c.fd = -1;
            return false;
        case mode::hold:
            if (c.received != c.target || c.echoed_once) return true;
            c.echoed_once = true;
            --connecting_;
            ++ready_;
            return true;
        }
        return true;
    }

    void count_done(std::uint64_t started_ns) {
        if (!warm_) return;
        ++done_;
        bytes_ += opt_.size;
        if (latencies_.size() < max_latency_samples) {
            const std::uint64_t ns = now_ns() - started_ns;
            latencies_.push_back(static_cast<std::uint32_t>(std::min<std::uint64_t>(ns, 0xffffffffu)));
        }
    }

    // connrate: every slot whose connection has finished or failed opens the next one.
    void refill_connrate_slots() {
        if (stopping_) return;
        for (std::size_t i = 0; i < conns_.size(); ++i) {
            if (conns_[i].fd >= 0) continue;
            if (budget_exhausted()) return;
            ++in_flight_;
            open(i);
        }
    }

    int hold() {
        const std::uint64_t t = now_ns();
        const std::uint64_t until = t + static_cast<std::uint64_t>(opt_.duration * 1e9);
        measure_start_ns_ = t;
        measure_start_cpu_ns_ = cpu_ns();
        warm_ = true;
        loop_until([&] { return setup_failed_ || now_ns() >= until; });
        rss_after_kb_ = read_rss_kb(opt_.server_pid);
        return report();
    }

    // ---- result ---------------------------------------------------------------------

    int report() {
        const std::uint64_t end = now_ns();
        const double secs = warm_ ? static_cast<double>(end - measure_start_ns_) / 1e9 : 0.0;
        const double cpu = warm_ && secs > 0 ? static_cast<double>(cpu_ns() - measure_start_cpu_ns_) / 1e9 / secs : 0.0;
        const double rate = secs > 0 ? static_cast<double>(done_) / secs : 0.0;
        double msgs = static_cast<double>(done_);
        double msgs_per_s = 0, conns_per_s = 0;
        switch (opt_.m) {
        case mode::pingpong: msgs_per_s = rate; break;
        case mode::stream: msgs = static_cast<double>(bytes_ / opt_.size); msgs_per_s = secs > 0 ? msgs / secs : 0; break;
        case mode::connrate: conns_per_s = rate; break;
        case mode::hold: {
            const double setup_s = static_cast<double>(setup_end_ns_ - setup_start_ns_) / 1e9;
            conns_per_s = setup_s > 0 ? static_cast<double>(ready_) / setup_s : 0;
            msgs = static_cast<double>(ready_);
            break;
        }
        }
        const double p50 = percentile_us(latencies_, 0.50);
        const double p99 = percentile_us(latencies_, 0.99);
        const double mb_per_s = secs > 0 ? static_cast<double>(bytes_) / 1e6 / secs : 0;
        const long rss_delta_kb = rss_after_kb_ > 0 ? rss_after_kb_ - rss_before_kb_ : 0;
        const double rss_per_conn = opt_.m == mode::hold && ready_ > 0
                                        ? static_cast<double>(rss_delta_kb) * 1024.0 / static_cast<double>(ready_)
                                        : 0.0;
        std::printf(
            "result mode=%s conns=%zu size=%zu msgs=%.0f secs=%.3f msgs_per_s=%.0f p50_us=%.1f p99_us=%.1f "
            "mb_per_s=%.1f conns_per_s=%.0f rss_before_kb=%ld rss_after_kb=%ld rss_per_conn_b=%.0f errors=%llu "
            "loadgen_cpu=%.2f\n",
            opt_.mode_name, opt_.connections, opt_.size, msgs, secs, msgs_per_s, p50, p99, mb_per_s, conns_per_s,
            rss_before_kb_, rss_after_kb_, rss_per_conn, static_cast<unsigned long long>(errors_), cpu);
        std::fflush(stdout);
        return errors_ == 0 && !setup_failed_ ? 0 : 1;
    }

    [[noreturn]] static void fail(const char* what) {
        std::fprintf(stderr, "loadgen: %s: %s\n", what, std::strerror(errno));
        std::exit(1);
    }

    static constexpr std::size_t max_latency_samples = 1u << 24;

    options opt_;
    std::vector<connection> conns_;
    std::vector<char> pattern_;
    std::vector<char> read_buffer_;
    std::vector<std::uint32_t> latencies_;
    sockaddr_in address_{};
    int epoll_fd_ = -1;

    std::size_t next_to_open_ = 0;
    std::size_t connecting_ = 0;   // opened, not yet ready (not used by connrate)
    std::size_t ready_ = 0;        // pingpong/stream: connected; hold: echoed once
    std::size_t in_flight_ = 0;    // requests (pingpong) or connections (connrate) started, not done
    std::uint64_t errors_ = 0;
    bool setup_failed_ = false;

    bool warm_ = false;
    bool stopping_ = false;
    std::uint64_t setup_start_ns_ = 0;
    std::uint64_t setup_end_ns_ = 0;
    std::uint64_t warmup_end_ns_ = 0;
    std::uint64_t end_ns_ = unbounded;
    std::uint64_t measure_start_ns_ = 0;
    std::uint64_t measure_start_cpu_ns_ = 0;
    std::uint64_t done_ = 0;
    std::uint64_t bytes_ = 0;
    long rss_before_kb_ = 0;
    long rss_after_kb_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
    const options opt = parse_options(argc, argv);
    ::signal(SIGPIPE, SIG_IGN);
    raise_nofile_limit(opt.connections);
    load_generator lg(opt);
    return lg.run();
}
