/** Each stream of an exec result is capped at this many characters (SPEC §4). */
export const EXEC_OUTPUT_CAP = 65536;
