/**
 * The sampling parameters a run's generations and its exported Modelfile share, in Ollama's
 * names. Defaults are the seed's v7 Modelfile (temperature 0.8, top_p 0.9, num_ctx 512,
 * num_predict 120, repeat_penalty 1.25) plus top_k 20 (Qwen3's recommended value; the seed left
 * Ollama's 40). Here, below both generation (src/generate/sampling.ts, generator.ts) and export
 * (src/export/modelfile.ts), so neither imports the other for them.
 */
export interface ModelfileParameters {
  readonly temperature: number;
  readonly top_p: number;
  readonly top_k: number;
  readonly num_ctx: number;
  readonly num_predict: number;
  readonly repeat_penalty: number;
}

export const SEED_PARAMETERS: ModelfileParameters = Object.freeze({
  temperature: 0.8,
  top_p: 0.9,
  top_k: 20,
  num_ctx: 512,
  num_predict: 120,
  repeat_penalty: 1.25,
});
