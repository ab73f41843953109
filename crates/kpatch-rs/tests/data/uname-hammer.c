/*
 * The system-call scenario's workload (crates/kpatch-rs/tests/guest_scenarios.rs): N processes
 * call uname(2) in a loop until a stop file appears. Each result must be the machine name the
 * kernel had before the patch ("x86_64") or the patched one ("x86_64-kpatch-rs"). Under the
 * livepatch consistency model a task switches once when the patch is applied and once when it
 * is reverted, so one process may see old, new, old in that order and never flip back and
 * forth more often than that.
 *
 * The callers run at nice 19 and yield every 64 calls, like a background load, and each stops by
 * itself after 40 seconds, so that a guest whose patch never finishes still ends its run. (The
 * soft lockups this scenario once met were QEMU's multi-threaded TCG running a stale int3 at
 * the system call's entry; see TcgThread in crates/kpatch-guest.)
 *
 * usage: uname-hammer N STOP-FILE READY-FILE
 * Prints one summary line; exits 0 when no result was wrong and no process flipped more than
 * twice, 1 otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct counts {
	unsigned long old, new, wrong, flips;
	char wrong_value[sizeof(((struct utsname *)0)->machine)];
	int ready;
};

static void hammer(struct counts *c, const char *stop)
{
	int last = -1;
	unsigned long i;

	time_t end = time(NULL) + 40;

	c->ready = 1;
	for (i = 0;; i++) {
		struct utsname u;
		int now;

		if ((i & 255) == 0 && (access(stop, F_OK) == 0 || time(NULL) > end))
			break;
		if ((i & 63) == 63)
			sched_yield();
		if (uname(&u) != 0) {
			c->wrong++;
			continue;
		}
		if (strcmp(u.machine, "x86_64") == 0) {
			c->old++;
			now = 0;
		} else if (strcmp(u.machine, "x86_64-kpatch-rs") == 0) {
			c->new++;
			now = 1;
		} else {
			c->wrong++;
			memcpy(c->wrong_value, u.machine, sizeof(c->wrong_value));
			continue;
		}
		if (last != -1 && now != last)
			c->flips++;
		last = now;
	}
}

int main(int argc, char **argv)
{
	struct counts *c;
	unsigned long old = 0, new = 0, wrong = 0, both = 0, max_flips = 0;
	int n, i, ready, failed = 0;
	FILE *f;

	if (argc != 4) {
		fprintf(stderr, "usage: %s N STOP-FILE READY-FILE\n", argv[0]);
		return 2;
	}
	n = atoi(argv[1]);
	c = mmap(NULL, sizeof(*c) * n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (c == MAP_FAILED) {
		perror("mmap");
		return 2;
	}
	memset(c, 0, sizeof(*c) * n);
	for (i = 0; i < n; i++) {
		pid_t pid = fork();

		if (pid < 0) {
			perror("fork");
			return 2;
		}
		if (pid == 0) {
			setpriority(PRIO_PROCESS, 0, 19);
			hammer(&c[i], argv[2]);
			_exit(0);
		}
	}
	do {
		usleep(10000);
		for (ready = 0, i = 0; i < n; i++)
			ready += __atomic_load_n(&c[i].ready, __ATOMIC_ACQUIRE);
	} while (ready < n);
	f = fopen(argv[3], "w");
	if (f)
		fclose(f);
	for (i = 0; i < n; i++)
		wait(NULL);
	for (i = 0; i < n; i++) {
		old += c[i].old;
		new += c[i].new;
		wrong += c[i].wrong;
		if (c[i].old && c[i].new)
			both++;
		if (c[i].flips > max_flips)
			max_flips = c[i].flips;
		if (c[i].wrong) {
			printf("process %d saw a wrong machine name: '%s'\n", i, c[i].wrong_value);
			failed = 1;
		}
		if (c[i].flips > 2)
			failed = 1;
	}
	printf("uname-hammer: %d processes, %lu calls: %lu unpatched, %lu patched, %lu wrong; "
	       "%lu processes saw both, at most %lu switches in one process\n",
	       n, old + new + wrong, old, new, wrong, both, max_flips);
	return failed;
}
