/*
 * The kernel floor for `run /bin/true` with the bench bundle's config: the
 * least that any runtime must ask the kernel for, and nothing else.
 *
 *   floor ROOTFS CGROUP_NAME
 *
 * - mkdir CGROUP_NAME in every cgroup hierarchy mounted under /sys/fs/cgroup
 *   (a v1 cpuset gets its parent's cpus and mems, without which nothing joins)
 *   (the new process joins cgroup2 by CLONE_INTO_CGROUP, and each v1
 *   hierarchy by writing itself into its `tasks` file);
 * - clone3 with the spec's namespaces (pid, net, ipc, uts, mount, cgroup);
 * - in the child: the rootfs bind mount, the spec's mounts that need no
 *   policy (proc, /dev tmpfs, devpts, /dev/shm, mqueue, sysfs), pivot_root,
 *   the old root detached, the read-only root, the hostname, execve;
 * - in the parent: wait, then rmdir the cgroups.
 *
 * What it leaves out (policy a runtime adds on top: device nodes, masked and
 * read-only paths, the cgroup mount, capabilities, no_new_privs, rlimits, the
 * state file, hooks) is why it is a floor. Built by scripts/bench.sh with cc;
 * not part of the Cargo workspace. Any failure exits 125 with the step named.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <mntent.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_CG 16

static char cg_dirs[MAX_CG][512];
static int cg_tasks[MAX_CG];
static int n_cg;
static int cg2_fd = -1;

static void die(const char *what) {
    fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
    _exit(125);
}

/* One directory per hierarchy mounted under /sys/fs/cgroup. */
/* A new v1 cpuset is empty until given its parent's cpus and mems. */
static void copy_cpuset(const char *mnt_dir, const char *dir) {
    static const char *files[] = {"cpuset.cpus", "cpuset.mems"};
    for (int i = 0; i < 2; i++) {
        char from[600], to[600], buf[256];
        snprintf(from, sizeof from, "%s/%s", mnt_dir, files[i]);
        int in = open(from, O_RDONLY | O_CLOEXEC);
        if (in < 0) return; /* not a cpuset hierarchy */
        ssize_t n = read(in, buf, sizeof buf);
        close(in);
        if (n <= 0) die("read cpuset");
        snprintf(to, sizeof to, "%s/%s", dir, files[i]);
        int out = open(to, O_WRONLY | O_CLOEXEC);
        if (out < 0 || write(out, buf, (size_t)n) != n) die("write cpuset");
        close(out);
    }
}

static void make_cgroups(const char *name) {
    FILE *m = setmntent("/proc/self/mounts", "r");
    struct mntent *e;
    if (!m) die("/proc/self/mounts");
    while ((e = getmntent(m)) && n_cg < MAX_CG) {
        int v2 = strcmp(e->mnt_type, "cgroup2") == 0;
        if (!v2 && strcmp(e->mnt_type, "cgroup") != 0) continue;
        if (strncmp(e->mnt_dir, "/sys/fs/cgroup", 14) != 0) continue;
        snprintf(cg_dirs[n_cg], sizeof cg_dirs[n_cg], "%s/%s", e->mnt_dir, name);
        if (mkdir(cg_dirs[n_cg], 0755) < 0 && errno != EEXIST) die("mkdir cgroup");
        cg_tasks[n_cg] = -1;
        if (!v2) copy_cpuset(e->mnt_dir, cg_dirs[n_cg]);
        if (v2) {
            cg2_fd = open(cg_dirs[n_cg], O_PATH | O_DIRECTORY | O_CLOEXEC);
            if (cg2_fd < 0) die("open cgroup2");
        } else {
            char tasks[600];
            snprintf(tasks, sizeof tasks, "%s/tasks", cg_dirs[n_cg]);
            cg_tasks[n_cg] = open(tasks, O_WRONLY | O_CLOEXEC);
            if (cg_tasks[n_cg] < 0) die("open tasks");
        }
        n_cg++;
    }
    endmntent(m);
}

static void mnt(const char *src, const char *dst, const char *type, unsigned long flags,
                const char *data) {
    if (mount(src, dst, type, flags, data) < 0) {
        fprintf(stderr, "floor: mount %s: %s\n", dst, strerror(errno));
        _exit(125);
    }
}

static void child(const char *rootfs) {
    for (int i = 0; i < n_cg; i++)
        if (cg_tasks[i] >= 0 && write(cg_tasks[i], "0", 1) != 1) die("join cgroup");
    mnt(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
    mnt(rootfs, rootfs, NULL, MS_BIND | MS_REC, NULL);
    if (chdir(rootfs) < 0) die("chdir rootfs");
    mnt("proc", "proc", "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV, NULL);
    mnt("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k");
    mkdir("dev/pts", 0755);
    mnt("devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620");
    mkdir("dev/shm", 0755);
    mnt("shm", "dev/shm", "tmpfs", MS_NOSUID | MS_NOEXEC | MS_NODEV, "mode=1777,size=65536k");
    mkdir("dev/mqueue", 0755);
    mnt("mqueue", "dev/mqueue", "mqueue", MS_NOSUID | MS_NOEXEC | MS_NODEV, NULL);
    mnt("sysfs", "sys", "sysfs", MS_NOSUID | MS_NOEXEC | MS_NODEV | MS_RDONLY, NULL);
    if (syscall(SYS_pivot_root, ".", ".") < 0) die("pivot_root");
    if (umount2(".", MNT_DETACH) < 0) die("umount old root");
    if (chdir("/") < 0) die("chdir /");
    mnt(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL);
    if (sethostname("skiff", 5) < 0) die("sethostname");
    char *argv[] = {"/bin/true", NULL};
    char *envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    execve(argv[0], argv, envp);
    die("execve");
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: floor ROOTFS CGROUP_NAME\n");
        return 2;
    }
    make_cgroups(argv[2]);
    struct clone_args ca;
    memset(&ca, 0, sizeof ca);
    ca.flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET |
               CLONE_NEWCGROUP;
    if (cg2_fd >= 0) {
        ca.flags |= CLONE_INTO_CGROUP;
        ca.cgroup = (uint64_t)cg2_fd;
    }
    ca.exit_signal = SIGCHLD;
    long pid = syscall(SYS_clone3, &ca, sizeof ca);
    if (pid < 0) die("clone3");
    if (pid == 0) child(argv[1]);
    int status;
    while (waitpid((pid_t)pid, &status, 0) < 0)
        if (errno != EINTR) die("waitpid");
    for (int i = 0; i < n_cg; i++) rmdir(cg_dirs[i]);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
