import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';

/**
 * TensorBoard `Event` protos (tensorflow/core/util/event.proto, summary.proto, tensor.proto),
 * encoded field by field with @bufbuild/protobuf's wire writer. The fields used:
 *
 *   Event           wall_time = 1 (double), step = 2 (int64), file_version = 3 (string), summary = 5
 *   Summary         value = 1 (repeated Value)
 *   Summary.Value   tag = 1, simple_value = 2 (float), metadata = 9, tensor = 8
 *   SummaryMetadata plugin_data = 1 (PluginData: plugin_name = 1, content = 2 bytes)
 *   TensorProto     dtype = 1 (DT_STRING = 7), tensor_shape = 2 (dim = 2: size = 1), string_val = 8
 *
 * Text is written as torch.utils.tensorboard's add_text does (which transformers' TensorBoard
 * callback calls): tag "<name>/text_summary", plugin "text", a string tensor of shape [1].
 */
export const FILE_VERSION = 'brain.Event:2';
const DT_STRING = 7;

function event(wallTime: number, step: number, body: (w: BinaryWriter) => void): Uint8Array {
  const w = new BinaryWriter();
  w.tag(1, WireType.Bit64).double(wallTime);
  w.tag(2, WireType.Varint).int64(step);
  body(w);
  return w.finish();
}

/** The first record of every event file. */
export function fileVersionEvent(wallTime: number): Uint8Array {
  return event(wallTime, 0, (w) => w.tag(3, WireType.LengthDelimited).string(FILE_VERSION));
}

/** One scalar summary (add_scalar). */
export function scalarEvent(tag: string, value: number, step: number, wallTime: number): Uint8Array {
  return event(wallTime, step, (w) => {
    w.tag(5, WireType.LengthDelimited).fork(); // summary
    w.tag(1, WireType.LengthDelimited).fork(); // value
    w.tag(1, WireType.LengthDelimited).string(tag);
    w.tag(2, WireType.Bit32).float(value);
    w.join().join();
  });
}

/** One text summary (add_text): tag "<name>/text_summary". */
export function textEvent(name: string, text: string, step: number, wallTime: number): Uint8Array {
  return event(wallTime, step, (w) => {
    w.tag(5, WireType.LengthDelimited).fork(); // summary
    w.tag(1, WireType.LengthDelimited).fork(); // value
    w.tag(1, WireType.LengthDelimited).string(`${name}/text_summary`);
    w.tag(9, WireType.LengthDelimited).fork(); // metadata
    w.tag(1, WireType.LengthDelimited).fork(); // plugin_data
    w.tag(1, WireType.LengthDelimited).string('text');
    w.tag(2, WireType.LengthDelimited).bytes(new Uint8Array(0)); // TextPluginData{version: 0}
    w.join().join();
    w.tag(8, WireType.LengthDelimited).fork(); // tensor
    w.tag(1, WireType.Varint).int32(DT_STRING);
    w.tag(2, WireType.LengthDelimited).fork(); // tensor_shape
    w.tag(2, WireType.LengthDelimited).fork().tag(1, WireType.Varint).int64(1).join(); // dim { size: 1 }
    w.join();
    w.tag(8, WireType.LengthDelimited).bytes(new TextEncoder().encode(text));
    w.join();
    w.join().join();
  });
}
