// A container process's stdio on the host: containerd's side (fifos, or files) joined to the
// agent's stdio streams of that process (one vsock connection per stream, common/agent/dialer.h).
// One thread per direction copies through a 64 KiB buffer, so memory stays bounded whatever the
// volume; the agent closes an output stream after the process's last byte, so "both outputs at
// EOF" means every byte reached containerd.
#ifndef KAPSEL_SHIM_PROCESS_IO_H_
#define KAPSEL_SHIM_PROCESS_IO_H_

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"

namespace kapsel::shim {

struct StdioPaths {
  std::string stdin_path;  // empty: no stdin
  std::string stdout_path;
  std::string stderr_path;
  bool terminal = false;  // one pty: stdout carries both outputs, stderr is unused
};

class ProcessIo {
 public:
  // Opens containerd's side: a fifo, a regular file path, or a file:// URI per stream; other URI
  // schemes (binary://) are Unimplemented. Nothing is read or written until Attach.
  static absl::StatusOr<std::unique_ptr<ProcessIo>> Open(const StdioPaths& paths);
  ProcessIo(const ProcessIo&) = delete;
  ProcessIo& operator=(const ProcessIo&) = delete;
  ~ProcessIo();  // stops copying and joins the threads

  bool has_stdin() const { return has_stdin_; }
  bool terminal() const { return terminal_; }

  // Opens the agent's streams for the process and starts copying.
  absl::Status Attach(const std::string& agent_endpoint, const std::string& container_id,
                      const std::string& exec_id);
  // For a process that will never run (its start failed), before any Attach: closes
  // containerd's side, so containerd's output readers see EOF instead of waiting forever.
  void CloseUnattached();
  // Until every output stream reached EOF and was written out, at most `timeout`; true when done.
  bool WaitOutput(absl::Duration timeout);
  // Ends the process's stdin (what containerd's CloseIO asks): the stdin copy stops and the agent
  // sees EOF on the stream.
  void CloseStdin();

 private:
  ProcessIo() = default;
  // Copies `from` → `to` until EOF on `from`, an error, or cancellation; then half-closes `to`
  // when `shutdown_to_on_eof`. Output copies wait for nothing but the stream and `cancel_`.
  void Copy(int from, int to, bool is_output, bool shutdown_to_on_eof);
  // An output copy on its own thread, owning containerd's end `to`.
  void StartCopy(int from, UniqueFd to, bool is_output, bool shutdown_to_on_eof);

  bool terminal_ = false;
  bool has_stdin_ = false;
  UniqueFd stdin_, stdout_, stderr_;  // containerd's side
  std::vector<UniqueFd> streams_;     // the agent's side
  int stdin_stream_ = -1;             // the stream stdin goes to (stdin or terminal stream)
  UniqueFd cancel_;                   // eventfd: stop everything
  UniqueFd stdin_cancel_;             // eventfd: stop the stdin copy (CloseIO)
  std::vector<std::thread> threads_;
  absl::Mutex mu_;
  int outputs_running_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kapsel::shim

#endif  // KAPSEL_SHIM_PROCESS_IO_H_
