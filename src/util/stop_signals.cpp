#include "util/stop_signals.h"

#include <signal.h>

namespace medseg {
namespace {

std::atomic<bool> g_stop_requested{false};
std::atomic<int> g_signal{0};
std::atomic<bool> g_alive{false};
struct sigaction g_previous_term;
struct sigaction g_previous_int;

extern "C" void on_stop_signal(int signal_number) {
  int expected = 0;
  g_signal.compare_exchange_strong(expected, signal_number);
  g_stop_requested.store(true);
}

}  // namespace

StopSignals::StopSignals() {
  g_stop_requested = false;
  g_signal = 0;
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, &g_previous_term);
  sigaction(SIGINT, &action, &g_previous_int);
  g_alive = true;
}

StopSignals::~StopSignals() {
  g_alive = false;
  sigaction(SIGTERM, &g_previous_term, nullptr);
  sigaction(SIGINT, &g_previous_int, nullptr);
}

const std::atomic<bool>* StopSignals::flag() const { return &g_stop_requested; }

int StopSignals::signal_number() const { return g_signal.load(); }

bool stop_requested() { return g_alive.load() && g_stop_requested.load(); }

const std::atomic<bool>* stop_flag() { return g_alive.load() ? &g_stop_requested : nullptr; }

}  // namespace medseg
