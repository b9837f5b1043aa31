#include "util/stop_signals.h"

#include <signal.h>

namespace medseg {
namespace {

std::atomic<bool> g_stop_requested{false};
std::atomic<int> g_signal{0};
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
}

StopSignals::~StopSignals() {
  sigaction(SIGTERM, &g_previous_term, nullptr);
  sigaction(SIGINT, &g_previous_int, nullptr);
}

const std::atomic<bool>* StopSignals::flag() const { return &g_stop_requested; }

int StopSignals::signal_number() const { return g_signal.load(); }

}  // namespace medseg
