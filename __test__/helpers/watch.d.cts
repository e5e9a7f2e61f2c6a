// Types of watch.cjs (plain CommonJS, shared with the adversarial child scripts run by plain node),
// for the strict tsconfigs that import it through helpers/events.ts (ava's and the conformance one).
/**
 * Resolves once `cond()` holds, checking it at the start and on each change fs.watch reports for
 * `target`. With `ms`, rejects after that long naming `what` (it only bounds a failure).
 */
export declare function watchUntil(target: string, cond: () => boolean, what?: string, ms?: number): Promise<void>
