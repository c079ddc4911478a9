import { resolve } from 'node:path';
import type { TrainConfig } from '../config/schema.js';
import { hubOptionsFromEnv, resolveRepo } from '../data/hub.js';
import { EMBEDDED_MODEL_ID, materializeEmbeddedModel } from '../model/embedded.js';
import { randomModelFor } from '../model/random-model.js';

/**
 * The model folder of a config's model_id, as `train` finds it: the embedded model (created on first
 * use under outputs/.embedded-model), deterministic random weights (outputs/.random-models), a local
 * folder, or a Hub id through the Hugging Face cache (HF_HOME, HF_TOKEN, HF_HUB_OFFLINE).
 */
export async function resolveModelDir(config: Pick<TrainConfig, 'model_id' | 'random_weights' | 'model_revision'>, log: (line: string) => void = () => undefined): Promise<string> {
  if (config.model_id === EMBEDDED_MODEL_ID) return materializeEmbeddedModel(resolve('outputs', '.embedded-model'));
  if (config.random_weights) return (await randomModelFor(config.model_id, resolve('outputs', '.random-models'), { log })).dir;
  return (await resolveRepo(config.model_id, 'model', hubOptionsFromEnv(process.env), { revision: config.model_revision })).path;
}
