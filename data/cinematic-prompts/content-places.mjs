// Places of the bundled dataset. Each: kind (what subjects can go there), s (as a scene
// description says it), pp (as the prompt says it, a prepositional phrase), time (dawn, day,
// dusk, night; indoor places: iday, inight), el (what the air and surroundings can hold).
export const PLACES = [
  // harbor
  { kind: 'harbor', s: 'on a foggy pier at dawn', pp: 'at the end of a fog-bound pier', time: 'dawn', el: ['fog', 'water', 'birds'] },
  { kind: 'harbor', s: 'in a busy fishing harbor at midday', pp: 'among bobbing trawlers in a crowded harbor', time: 'day', el: ['water', 'birds', 'crowd'] },
  { kind: 'harbor', s: 'by a lighthouse during a storm at night', pp: 'beneath a lighthouse lashed by a night storm', time: 'night', el: ['rain', 'wind', 'water'] },
  { kind: 'harbor', s: 'on a rocky headland in a gale', pp: 'out on a rocky headland battered by a gale', time: 'dusk', el: ['wind', 'water', 'birds'] },
  { kind: 'harbor', s: 'on a quiet dock at sunset', pp: 'on a weathered dock as the sun drops', time: 'dusk', el: ['water', 'birds', 'wind'] },
  // beach
  { kind: 'beach', s: 'on a black sand beach under heavy clouds', pp: 'across a black volcanic beach under a bruised sky', time: 'day', el: ['wind', 'water', 'sand'] },
  { kind: 'beach', s: 'on an empty beach at sunrise', pp: 'along an empty shoreline at first light', time: 'dawn', el: ['water', 'birds', 'sand'] },
  { kind: 'beach', s: 'at a beach bonfire at night', pp: 'beside a crackling driftwood bonfire on the sand', time: 'night', el: ['embers', 'smoke', 'water'] },
  { kind: 'beach', s: 'in the tide pools at low tide', pp: 'among glistening tide pools at low tide', time: 'day', el: ['water', 'birds'] },
  // forest
  { kind: 'forest', s: 'in a misty pine forest', pp: 'between towering pines wrapped in mist', time: 'dawn', el: ['fog', 'leaves', 'birds'] },
  { kind: 'forest', s: 'in a redwood grove at noon', pp: 'at the foot of giant redwoods', time: 'day', el: ['leaves', 'dust', 'insects'] },
  { kind: 'forest', s: 'in an autumn forest at dusk', pp: 'through a forest of burning autumn colour', time: 'dusk', el: ['leaves', 'wind'] },
  { kind: 'forest', s: 'in a dark forest at night', pp: 'deep in a moonless forest', time: 'night', el: ['fog', 'nightbugs'] },
  { kind: 'forest', s: 'in a bamboo grove', pp: 'inside a rustling bamboo grove', time: 'day', el: ['wind', 'leaves'] },
  // mountain
  { kind: 'mountain', s: 'on a windswept mountain ridge', pp: 'along a knife-edge ridge high above the clouds', time: 'day', el: ['wind', 'snow', 'fog'] },
  { kind: 'mountain', s: 'at an alpine lake at dawn', pp: 'on the shore of a glassy alpine lake', time: 'dawn', el: ['water', 'fog', 'birds'] },
  { kind: 'mountain', s: 'in a mountain pass during a blizzard', pp: 'through a narrow pass swallowed by a blizzard', time: 'day', el: ['snow', 'wind'] },
  { kind: 'mountain', s: 'at a summit camp at dusk', pp: 'at a tiny summit camp as the light drains away', time: 'dusk', el: ['wind', 'snow'] },
  // desert
  { kind: 'desert', s: 'in a vast desert at noon', pp: 'across an endless desert under a white-hot sky', time: 'day', el: ['sand', 'dust', 'wind'] },
  { kind: 'desert', s: 'among red rock canyons at sunset', pp: 'between towering red canyon walls', time: 'dusk', el: ['dust', 'wind'] },
  { kind: 'desert', s: 'on salt flats at night', pp: 'out on silver salt flats under a sea of stars', time: 'night', el: ['wind', 'dust'] },
  { kind: 'desert', s: 'in a desert oasis at dawn', pp: 'at the edge of a palm-fringed oasis', time: 'dawn', el: ['water', 'sand', 'birds'] },
  // snow
  { kind: 'snow', s: 'in a frozen village at night', pp: 'through a frozen village of shuttered windows', time: 'night', el: ['snow', 'smoke'] },
  { kind: 'snow', s: 'on a frozen lake', pp: 'out on the cracked ice of a frozen lake', time: 'day', el: ['snow', 'wind'] },
  { kind: 'snow', s: 'in a snowy birch forest at dusk', pp: 'among pale birches sinking into snow', time: 'dusk', el: ['snow', 'birds'] },
  { kind: 'snow', s: 'at an arctic research station', pp: 'outside a lonely arctic research station', time: 'night', el: ['snow', 'wind', 'machines'] },
  // street
  { kind: 'street', s: 'on a rain-soaked city street at night', pp: 'down a rain-soaked street glowing with shop signs', time: 'night', el: ['rain', 'neon', 'reflections', 'crowd'] },
  { kind: 'street', s: 'in a narrow alley in Tokyo at night', pp: 'through a cramped Tokyo alley stacked with lanterns', time: 'night', el: ['neon', 'steam', 'crowd'] },
  { kind: 'street', s: 'on a crowded avenue at rush hour', pp: 'against the tide of a rush-hour avenue', time: 'day', el: ['crowd', 'machines', 'dust'] },
  { kind: 'street', s: 'in a quiet cobblestone square at dawn', pp: 'across an empty cobblestone square', time: 'dawn', el: ['birds', 'fog'] },
  { kind: 'street', s: 'under an elevated railway at dusk', pp: 'beneath the iron girders of an elevated railway', time: 'dusk', el: ['machines', 'dust', 'crowd'] },
  // rooftop
  { kind: 'rooftop', s: 'on a rooftop above the city at night', pp: 'on a gravel rooftop above a glittering skyline', time: 'night', el: ['wind', 'neon'] },
  { kind: 'rooftop', s: 'on a rooftop garden at sunset', pp: 'in a rooftop garden catching the last sun', time: 'dusk', el: ['wind', 'leaves', 'birds'] },
  { kind: 'rooftop', s: 'on a water tower roof in the rain', pp: 'atop a water tower streaked with rain', time: 'day', el: ['rain', 'wind'] },
  // transit
  { kind: 'transit', s: 'in an empty subway car late at night', pp: 'inside an empty subway car rattling through the dark', time: 'inight', el: ['machines', 'reflections'] },
  { kind: 'transit', s: 'on a train platform in the snow', pp: 'on an open train platform under falling snow', time: 'day', el: ['snow', 'machines', 'crowd'] },
  { kind: 'transit', s: 'in a grand train station at morning rush', pp: 'across the marble hall of a vast railway station', time: 'iday', el: ['crowd', 'dust'] },
  { kind: 'transit', s: 'on a night bus crossing the city', pp: 'on the top deck of a night bus', time: 'inight', el: ['neon', 'reflections', 'rain'] },
  // market
  { kind: 'market', s: 'in a crowded night market', pp: 'through a steaming night market of hanging bulbs', time: 'night', el: ['steam', 'crowd', 'smoke'] },
  { kind: 'market', s: 'at a flower market at dawn', pp: 'between buckets of cut flowers at a dawn market', time: 'dawn', el: ['crowd', 'water'] },
  { kind: 'market', s: 'in a spice bazaar', pp: 'down a covered spice bazaar heaped with colour', time: 'iday', el: ['dust', 'crowd', 'fabric'] },
  { kind: 'market', s: 'at a floating market on the river', pp: 'among wooden boats of a floating market', time: 'day', el: ['water', 'crowd'] },
  // cafe
  { kind: 'cafe', s: 'in a late-night diner', pp: 'in a chrome-lined diner after midnight', time: 'inight', el: ['steam', 'neon', 'reflections'] },
  { kind: 'cafe', s: 'in a smoky jazz bar', pp: 'in a low-ceilinged jazz bar', time: 'inight', el: ['smoke', 'candles', 'crowd'] },
  { kind: 'cafe', s: 'in a sunlit Parisian cafe', pp: 'at a corner table of a sunlit Parisian cafe', time: 'iday', el: ['steam', 'crowd'] },
  { kind: 'cafe', s: 'in a tiny ramen shop during a rainstorm', pp: 'at the counter of a tiny ramen shop as rain hammers outside', time: 'inight', el: ['steam', 'rain', 'reflections'] },
  // home
  { kind: 'home', s: 'in a cluttered apartment at night', pp: 'in a cluttered one-room apartment', time: 'inight', el: ['dust', 'paper'] },
  { kind: 'home', s: 'in a farmhouse kitchen in the morning', pp: 'in a farmhouse kitchen full of morning', time: 'iday', el: ['steam', 'dust'] },
  { kind: 'home', s: 'in a childhood bedroom', pp: 'in a childhood bedroom left untouched for years', time: 'iday', el: ['dust', 'fabric'] },
  { kind: 'home', s: 'in an empty house with sheets over the furniture', pp: 'in an empty house of sheet-draped furniture', time: 'iday', el: ['dust', 'fabric'] },
  { kind: 'home', s: 'in a candlelit living room during a blackout', pp: 'in a living room lit only by candles during a blackout', time: 'inight', el: ['candles', 'smoke'] },
  // workshop
  { kind: 'workshop', s: 'in a cramped painting studio', pp: 'in a cramped studio stacked with unfinished canvases', time: 'iday', el: ['dust', 'paper'] },
  { kind: 'workshop', s: 'in a blacksmith forge', pp: 'inside a soot-black forge', time: 'inight', el: ['embers', 'smoke'] },
  { kind: 'workshop', s: 'in a watchmaker shop', pp: 'at a watchmaker’s bench crowded with tiny gears', time: 'iday', el: ['dust', 'machines'] },
  { kind: 'workshop', s: 'in a garage at midnight', pp: 'in a cluttered garage under a buzzing tube light', time: 'inight', el: ['machines', 'dust'] },
  // industrial
  { kind: 'industrial', s: 'in an abandoned factory', pp: 'through a gutted factory hall', time: 'iday', el: ['dust', 'machines'] },
  { kind: 'industrial', s: 'in a shipyard at night', pp: 'beneath the cranes of a floodlit shipyard', time: 'night', el: ['machines', 'water', 'smoke'] },
  { kind: 'industrial', s: 'in a steel mill', pp: 'on the catwalks of a roaring steel mill', time: 'inight', el: ['embers', 'smoke', 'machines'] },
  { kind: 'industrial', s: 'at a power plant at dusk', pp: 'in the shadow of cooling towers', time: 'dusk', el: ['steam', 'machines'] },
  // sacred
  { kind: 'sacred', s: 'in a gothic cathedral', pp: 'down the nave of a vast gothic cathedral', time: 'iday', el: ['dust', 'candles'] },
  { kind: 'sacred', s: 'at a mountain temple at dawn', pp: 'on the steps of a cliffside temple', time: 'dawn', el: ['fog', 'smoke', 'birds'] },
  { kind: 'sacred', s: 'at a candlelit shrine', pp: 'before a small shrine crowded with candles', time: 'inight', el: ['candles', 'smoke'] },
  { kind: 'sacred', s: 'in an ancient stone chapel', pp: 'inside a bare stone chapel', time: 'iday', el: ['dust', 'birds'] },
  // stage
  { kind: 'stage', s: 'on an empty theater stage', pp: 'on an empty stage facing rows of velvet seats', time: 'inight', el: ['dust', 'fabric'] },
  { kind: 'stage', s: 'at a packed concert', pp: 'in front of a roaring festival crowd', time: 'night', el: ['crowd', 'smoke', 'neon'] },
  { kind: 'stage', s: 'in a basement club', pp: 'in a sweaty basement club', time: 'inight', el: ['crowd', 'smoke', 'neon'] },
  { kind: 'stage', s: 'in a circus tent', pp: 'under the striped canvas of a circus tent', time: 'inight', el: ['dust', 'crowd', 'fabric'] },
  // library
  { kind: 'library', s: 'in an old library', pp: 'between towering shelves of an old library', time: 'iday', el: ['dust', 'paper'] },
  { kind: 'library', s: 'in a museum after closing time', pp: 'through the dim galleries of a closed museum', time: 'inight', el: ['dust', 'reflections'] },
  { kind: 'library', s: 'in a dusty records archive', pp: 'in a basement archive of endless filing boxes', time: 'inight', el: ['dust', 'paper'] },
  // farm
  { kind: 'farm', s: 'in a wheat field before a storm', pp: 'across a wheat field bending before a storm', time: 'day', el: ['wind', 'dust', 'birds'] },
  { kind: 'farm', s: 'in an apple orchard at harvest', pp: 'between rows of heavy apple trees', time: 'dusk', el: ['leaves', 'insects'] },
  { kind: 'farm', s: 'in an old barn', pp: 'inside a sagging wooden barn', time: 'iday', el: ['dust', 'birds'] },
  { kind: 'farm', s: 'in a sunflower field', pp: 'in a sea of nodding sunflowers', time: 'day', el: ['insects', 'wind'] },
  // river
  { kind: 'river', s: 'by a waterfall in the jungle', pp: 'at the foot of a thundering jungle waterfall', time: 'day', el: ['water', 'fog', 'leaves'] },
  { kind: 'river', s: 'on a river at dawn', pp: 'on a slow brown river at first light', time: 'dawn', el: ['water', 'fog', 'birds'] },
  { kind: 'river', s: 'on a canal in Venice at night', pp: 'along a silent Venetian canal', time: 'night', el: ['water', 'reflections'] },
  { kind: 'river', s: 'at a lake under the stars', pp: 'on the still black water of a lake under the stars', time: 'night', el: ['water', 'nightbugs'] },
  // scifi
  { kind: 'scifi', s: 'aboard a space station', pp: 'inside the curved corridor of an orbiting station', time: 'inight', el: ['machines', 'reflections'] },
  { kind: 'scifi', s: 'on an alien planet with two suns', pp: 'across an alien plain under two setting suns', time: 'dusk', el: ['dust', 'wind'] },
  { kind: 'scifi', s: 'in a holographic control room', pp: 'in a control room washed in floating holograms', time: 'inight', el: ['neon', 'machines'] },
  { kind: 'scifi', s: 'in a flooded future city', pp: 'through the drowned streets of a future city', time: 'day', el: ['water', 'neon', 'reflections'] },
  // ruins
  { kind: 'ruins', s: 'among ancient temple ruins in the jungle', pp: 'among vine-choked temple ruins', time: 'day', el: ['leaves', 'insects', 'fog'] },
  { kind: 'ruins', s: 'in a bombed-out city at dusk', pp: 'through the broken shell of a bombed-out city', time: 'dusk', el: ['dust', 'smoke'] },
  { kind: 'ruins', s: 'in an overgrown amusement park', pp: 'through a rusting amusement park swallowed by weeds', time: 'day', el: ['wind', 'leaves', 'birds'] },
  { kind: 'underwater', s: 'in a sunken shipwreck', pp: 'inside the hull of a sunken wreck', time: 'day', el: ['water'] },
  // road
  { kind: 'road', s: 'on a lonely highway at night', pp: 'along an empty highway slicing through the dark', time: 'night', el: ['wind', 'nightbugs'] },
  { kind: 'road', s: 'at a roadside motel', pp: 'outside a flickering roadside motel', time: 'night', el: ['neon', 'nightbugs'] },
  { kind: 'road', s: 'at a desert gas station at dusk', pp: 'at a lone gas station on the desert’s edge', time: 'dusk', el: ['dust', 'wind'] },
  { kind: 'road', s: 'on a winding coastal road', pp: 'along a coastal road hugging the cliffs', time: 'day', el: ['wind', 'water', 'birds'] },
  // park
  { kind: 'park', s: 'in a cherry blossom park', pp: 'beneath cherry trees shedding blossom', time: 'day', el: ['leaves', 'wind', 'crowd'] },
  { kind: 'park', s: 'on an empty playground at dusk', pp: 'on an empty playground as the streetlights flicker on', time: 'dusk', el: ['wind', 'leaves'] },
  { kind: 'park', s: 'in a botanical glasshouse', pp: 'inside a humid Victorian glasshouse', time: 'iday', el: ['steam', 'leaves', 'insects'] },
  { kind: 'park', s: 'in a city park in the snow', pp: 'across a city park hushed by fresh snow', time: 'day', el: ['snow', 'birds'] },
  // sea
  { kind: 'sea', s: 'on the deck of a ship in a storm', pp: 'on the heaving deck of a ship in a storm', time: 'night', el: ['rain', 'wind', 'water'] },
  { kind: 'underwater', s: 'underwater near a coral reef', pp: 'over a sunlit coral reef', time: 'day', el: ['water'] },
  { kind: 'sea', s: 'on a small sailboat on a calm sea', pp: 'on a small sailboat adrift on a glassy sea', time: 'dawn', el: ['water', 'birds'] },
  { kind: 'underwater', s: 'in the deep ocean', pp: 'in the blue-black depths of the open ocean', time: 'night', el: ['water'] },
];
