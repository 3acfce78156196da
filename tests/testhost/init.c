// PID 1 of the kapsel test host (docs/testhost.md). tests/testhost/run compiles this file
// statically and packs it alone into the test host's initramfs: a C init forks nothing but the
// command, which matters under TCG, where every process start costs milliseconds.
//
// It mounts the outer machine's root (virtio-9p, read-only) under a throwaway tmpfs layer
// (overlayfs) at /newroot, mounts /proc, /sys, cgroup2, /dev, /tmp, /run, the requested output
// directories and tmpfs mounts there, runs the job in it (moved onto /, then chroot) with stdout
// and stderr on two virtio-serial ports, reports its exit status on a third, and resets the
// machine (reboot=t + QEMU -no-reboot: QEMU exits).
//
// Kernel command line: kapsel.job=DIR, a directory of the outer machine (read through 9p) with:
//   job.env   lines "cwd PATH", "outdir PATH" (9p tags outdir0, outdir1, ... in order), "tmpfs
//   PATH" job.argv  the command, NUL-terminated strings job.envp  its environment, NUL-terminated
//   NAME=VALUE strings
// virtio-serial ports, found by name: kapsel.stdout, kapsel.stderr, kapsel.status.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define NINEP_OPTS "trans=virtio,version=9p2000.L,msize=512000"

static int kmsg_fd = -1;
static int out_fd = -1;
static int err_fd = -1;
static int status_fd = -1;

// A line in the kernel log at error level: on the console even with `quiet` (the runner shows the
// console's tail when the test host fails; with printk.time=1 the marks time the boot).
static void mark(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = snprintf(buf, sizeof buf, "<3>kapsel test host: ");
  vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
  va_end(ap);
  if (kmsg_fd >= 0) (void)!write(kmsg_fd, buf, strlen(buf));
}

static void finish(int status) {
  if (status_fd >= 0) dprintf(status_fd, "%d\n", status);
  sync();
  reboot(RB_AUTOBOOT);
  for (;;) pause();
}

static void fail(const char* fmt, ...) {
  char msg[1024];
  int saved = errno;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  errno = saved;
  mark("%s", msg);
  if (err_fd >= 0) dprintf(err_fd, "kapsel test host: %s\n", msg);
  finish(125);
}

static void mount_or_fail(const char* src, const char* target, const char* type,
                          unsigned long flags, const char* data) {
  if (mount(src, target, type, flags, data) != 0)
    fail("cannot mount %s on %s: %m", type ? type : src, target);
}

static void mkdir_p(const char* path) {
  char buf[4096];
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) fail("path too long: %s", path);
  for (char* p = buf + 1;; ++p) {
    if (*p == '/' || *p == '\0') {
      char c = *p;
      *p = '\0';
      if (mkdir(buf, 0755) != 0 && errno != EEXIST) fail("cannot create %s: %m", buf);
      *p = c;
      if (c == '\0') break;
    }
  }
}

// Reads a whole file; returns its size in *size (the buffer is NUL-terminated one past it).
static char* slurp(const char* path, size_t* size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open %s: %m", path);
  size_t cap = 4096, len = 0;
  char* buf = malloc(cap);
  for (;;) {
    if (len + 1 >= cap) buf = realloc(buf, cap *= 2);
    if (!buf) fail("out of memory");
    ssize_t n = read(fd, buf + len, cap - len - 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("cannot read %s: %m", path);
    if (n == 0) break;
    len += (size_t)n;
  }
  close(fd);
  buf[len] = '\0';
  if (size) *size = len;
  return buf;
}

// Splits NUL-terminated strings into a NULL-terminated vector.
static char** split0(char* buf, size_t len) {
  size_t n = 0;
  for (size_t i = 0; i < len; ++i) n += buf[i] == '\0';
  char** v = calloc(n + 1, sizeof *v);
  if (!v) fail("out of memory");
  size_t k = 0;
  for (size_t i = 0; i < len && k < n; i += strlen(buf + i) + 1) v[k++] = buf + i;
  return v;
}

// Opens the virtio-serial ports by name. Names come from QEMU in control messages: wait for them.
static void open_ports(void) {
  for (int attempt = 0; attempt < 300 && (out_fd < 0 || err_fd < 0 || status_fd < 0); ++attempt) {
    if (attempt) usleep(10000);
    DIR* dir = opendir("/sys/class/virtio-ports");
    if (!dir) continue;
    struct dirent* e;
    while ((e = readdir(dir)) != NULL) {
      if (e->d_name[0] == '.') continue;
      char path[512], name[64] = "";
      snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
      int fd = open(path, O_RDONLY | O_CLOEXEC);
      if (fd < 0) continue;
      ssize_t n = read(fd, name, sizeof name - 1);
      close(fd);
      if (n <= 0) continue;
      name[n] = '\0';
      name[strcspn(name, "\n")] = '\0';
      int* target = strcmp(name, "kapsel.stdout") == 0   ? &out_fd
                    : strcmp(name, "kapsel.stderr") == 0 ? &err_fd
                    : strcmp(name, "kapsel.status") == 0 ? &status_fd
                                                         : NULL;
      if (!target || *target >= 0) continue;
      snprintf(path, sizeof path, "/dev/%s", e->d_name);
      *target = open(path, O_WRONLY | O_CLOEXEC);
    }
    closedir(dir);
  }
  if (out_fd < 0 || err_fd < 0 || status_fd < 0)
    fail("virtio-serial ports kapsel.stdout/stderr/status not found");
}

static void loopback_up(void) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strcpy(ifr.ifr_name, "lo");
  if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) mark("cannot bring lo up: %m");
  }
  close(s);
}

// Makes outer path `outer` visible at the same place in the new root when a fresh tmpfs (/tmp,
// /run) hides it, like the rest of the outer root: readable, and writable with writes thrown away
// (an overlay of the 9p view with a tmpfs upper layer).
static void show_outer(const char* outer) {
  static int shown = 0;
  char inside[4096], host[4096], layer[64], options[8400];
  struct stat st;
  snprintf(inside, sizeof inside, "/newroot%s", outer);
  if (stat(inside, &st) == 0) return;
  snprintf(host, sizeof host, "/host%s", outer);
  if (stat(host, &st) != 0) return;
  mkdir_p(inside);
  snprintf(layer, sizeof layer, "/rw/show%d", shown++);
  snprintf(options, sizeof options, "%s/upper", layer);
  mkdir_p(options);
  snprintf(options, sizeof options, "%s/work", layer);
  mkdir_p(options);
  snprintf(options, sizeof options, "lowerdir=%s,upperdir=%s/upper,workdir=%s/work", host, layer,
           layer);
  mount_or_fail("overlay", inside, "overlay", 0, options);
}

int main(void) {
  mount("proc", "/proc", "proc", 0, NULL);
  mount("sysfs", "/sys", "sysfs", 0, NULL);
  mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
  kmsg_fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
  mark("init started");
  open_ports();

  // kapsel.job=DIR
  char* cmdline = slurp("/proc/cmdline", NULL);
  char* job = NULL;
  for (char* w = strtok(cmdline, " \n"); w; w = strtok(NULL, " \n")) {
    if (strncmp(w, "kapsel.job=", 11) == 0) job = w + 11;
  }
  if (!job) fail("no kapsel.job= on the kernel command line");

  mount_or_fail("hostroot", "/host", "9p", MS_RDONLY, NINEP_OPTS ",cache=loose");
  char path[4096];
  size_t len;
  snprintf(path, sizeof path, "/host%s/job.env", job);
  char* env_file = slurp(path, NULL);
  snprintf(path, sizeof path, "/host%s/job.argv", job);
  char* argv_buf = slurp(path, &len);
  char** argv = split0(argv_buf, len);
  snprintf(path, sizeof path, "/host%s/job.envp", job);
  char* envp_buf = slurp(path, &len);
  char** envp = split0(envp_buf, len);
  if (!argv[0]) fail("empty command");

  // The root: the outer root, read-only, under a throwaway tmpfs layer.
  mount_or_fail("tmpfs", "/rw", "tmpfs", 0, "mode=0755");
  mkdir_p("/rw/upper");
  mkdir_p("/rw/work");
  mount_or_fail("overlay", "/newroot", "overlay", 0,
                "lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work");
  mount_or_fail(NULL, "/newroot", NULL, MS_REC | MS_SHARED, NULL);
  mount_or_fail("proc", "/newroot/proc", "proc", 0, NULL);
  mount_or_fail("sysfs", "/newroot/sys", "sysfs", 0, NULL);
  mount_or_fail("cgroup2", "/newroot/sys/fs/cgroup", "cgroup2", 0, NULL);
  mount_or_fail("devtmpfs", "/newroot/dev", "devtmpfs", 0, NULL);
  mkdir_p("/newroot/dev/pts");
  mkdir_p("/newroot/dev/shm");
  mount_or_fail("devpts", "/newroot/dev/pts", "devpts", 0, "newinstance,ptmxmode=0666,mode=0620");
  mount_or_fail("tmpfs", "/newroot/dev/shm", "tmpfs", 0, "mode=1777");
  mount_or_fail("tmpfs", "/newroot/tmp", "tmpfs", 0, "mode=1777");
  mount_or_fail("tmpfs", "/newroot/run", "tmpfs", 0, "mode=0755");

  // job.env: the working directory, outer paths to show (read-only, even under a fresh tmpfs
  // such as /tmp), extra tmpfs mounts, output directories (9p, read-write). Shown paths and tmpfs
  // mounts come first, so that output directories inside them are mounted on top.
  const char* cwd = "/";
  char* outdirs[64];
  int n_outdir = 0;
  for (char* line = strtok(env_file, "\n"); line; line = strtok(NULL, "\n")) {
    char* value = strchr(line, ' ');
    if (!value) continue;
    *value++ = '\0';
    snprintf(path, sizeof path, "/newroot%s", value);
    if (strcmp(line, "cwd") == 0) {
      cwd = value;
    } else if (strcmp(line, "tmpfs") == 0) {
      mkdir_p(path);
      mount_or_fail("tmpfs", path, "tmpfs", 0, "mode=0755");
    } else if (strcmp(line, "show") == 0) {
      show_outer(value);
    } else if (strcmp(line, "outdir") == 0 && n_outdir < 64) {
      outdirs[n_outdir++] = value;
    }
  }
  for (int i = 0; i < n_outdir; ++i) {
    char tag[32];
    snprintf(tag, sizeof tag, "outdir%d", i);
    snprintf(path, sizeof path, "/newroot%s", outdirs[i]);
    mkdir_p(path);
    mount_or_fail(tag, path, "9p", 0, NINEP_OPTS ",cache=mmap");
  }
  // A working directory hidden by a fresh tmpfs (/tmp, /run): show the outer one there, read-only.
  show_outer(cwd);

  sethostname("kapsel-testhost", strlen("kapsel-testhost"));
  loopback_up();
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

  mark("running the command");
  pid_t child = fork();
  if (child < 0) fail("fork: %m");
  if (child == 0) {
    setsid();
    // Move the new root onto / (as switch_root does) rather than only chroot into it: setns()
    // into a container's mount namespace puts the caller at the namespace's root mount and the
    // mounts stacked on it, so runc/crun exec would not find the container's root otherwise.
    // PID 1 keeps the initramfs as its root.
    if (chdir("/newroot") != 0 || mount("/newroot", "/", NULL, MS_MOVE, NULL) != 0 ||
        chroot(".") != 0 || chdir("/") != 0) {
      dprintf(err_fd, "kapsel test host: switching to the new root: %m\n");
      _exit(125);
    }
    if (chdir(cwd) != 0) {
      dprintf(err_fd, "kapsel test host: cannot enter %s: %m\n", cwd);
      _exit(125);
    }
    dup2(null_fd, 0);
    dup2(out_fd, 1);
    dup2(err_fd, 2);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    environ = envp;
    execvp(argv[0], argv);
    int e = errno;
    dprintf(2, "kapsel test host: %s: %s\n", argv[0], strerror(e));
    _exit(e == ENOENT ? 127 : 126);
  }
  // PID 1 also reaps the orphans the command leaves.
  int status = 0;
  for (;;) {
    pid_t pid = wait(&status);
    if (pid == child) break;
    if (pid < 0 && errno != EINTR) fail("wait: %m");
  }
  mark("the command exited");
  finish(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}
