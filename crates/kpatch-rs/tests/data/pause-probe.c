// SPDX-License-Identifier: GPL-2.0-only
/*
 * kpatch-rs freeze benchmark probe: wakes every millisecond and records the longest gap
 * between two wake-ups, which is the longest pause it saw (a freeze, or the scheduler).
 * SIGUSR1 writes the longest gap since the last SIGUSR1, in microseconds, to the file named
 * by argv[1], and starts again.
 */
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t dump;

static void on_usr1(int sig)
{
	(void)sig;
	dump = 1;
}

static long long now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

int main(int argc, char **argv)
{
	long long last, max = 0;

	if (argc != 2)
		return 2;
	signal(SIGUSR1, on_usr1);
	last = now_us();
	for (;;) {
		long long t;

		usleep(1000);
		t = now_us();
		if (t - last > max)
			max = t - last;
		last = t;
		if (dump) {
			FILE *f = fopen(argv[1], "w");

			if (f) {
				fprintf(f, "%lld\n", max);
				fclose(f);
			}
			max = 0;
			dump = 0;
			last = now_us();
		}
	}
}
