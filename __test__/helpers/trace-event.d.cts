// Types of trace-event.cjs (plain CommonJS, shared with the child scripts run by plain node).
export declare const TRACING: string
/**
 * Runs `fn` with each of `events` (e.g. 'syscalls/sys_enter_io_uring_enter') enabled in a fresh
 * trace instance, filtered to the threads `pids`; returns the instance's trace text.
 */
export declare function traceEvent(events: string | readonly string[], pids: number | string | readonly (number | string)[], fn: () => Promise<unknown>): Promise<string>
