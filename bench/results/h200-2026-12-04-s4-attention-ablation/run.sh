#!/usr/bin/env bash
cd "$(dirname "$0")/../.."
# the tree: this commit's dist and shaders in outputs/probe/N, with ablate.diff applied to its attention_sgm_forward.wgsl
F=outputs/probe/N/shaders/attention_sgm_forward.wgsl
for k in 0 6 4 2 1 3 5 0; do
  sed -i -E "s/^override ABLATE: u32 = [0-9]+u;/override ABLATE: u32 = ${k}u;/" $F
  node outputs/probe/N/dist/bench/attention-sgm.js --keys 32 --reps 20 --json $OUT/abl-$k.json > $OUT/abl-$k.log 2>&1
  python3 -c "
import json
d=json.load(open('$OUT/abl-$k.json')); print('ablate $k', ' | '.join(f\"{x['B']}x{x['T']}e{x['examples']} {x['ms']*1e3:.1f}us {x['tflops']:.1f}\" for x in d['results'] if x.get('kernel','').startswith('sgm BC')))"
done
cd $OUT && tar czf abl.tgz abl-* && rm abl-*
